"""The shapes world's vocabulary: shape names, colour names and their palette.

Colours are a subset of GenEval's ten colour names so that GenEval-style prompts over this world
read exactly like GenEval's own. The palette is chosen so that every pair of object colours, and
every object colour and the grey background, are far apart in RGB: the exact detector segments by
nearest palette colour, so separation is what makes it exact.
"""
from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

COLOURS: tuple[str, ...] = ("red", "yellow", "green", "blue", "purple", "white")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (235, 215, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
    "white": (240, 240, 240),
}

#: GenEval's full colour list (its CLIP colour classifier chooses among these).
GENEVAL_COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)

NUM_CLASSES = len(SHAPES) * len(COLOURS)


def class_id(shape: str, colour: str) -> int:
    """Class id of a (shape, colour) pair: shape_index * n_colours + colour_index."""
    return SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)


def class_attributes(label: int) -> tuple[str, str]:
    """(shape, colour) of a class id; raises ValueError outside [0, NUM_CLASSES)."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"shapes class id {label} is outside [0, {NUM_CLASSES}).")
    shape_index, colour_index = divmod(label, len(COLOURS))
    return SHAPES[shape_index], COLOURS[colour_index]


def class_name(label: int) -> str:
    """Human-readable class name, e.g. 'red circle'."""
    shape, colour = class_attributes(label)
    return f"{colour} {shape}"


def plural(noun: str) -> str:
    """GenEval's plural rule: 'es' after a final 's' ('crosses'), else 's'."""
    return f"{noun}es" if noun.endswith("s") else f"{noun}s"


#: Plural of every shape by GenEval's rule (the word encoder's vocabulary uses them).
SHAPE_PLURALS: dict[str, str] = {shape: plural(shape) for shape in SHAPES}

#: GenEval's number words (counting prompts use two to four).
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def with_article(word: str) -> str:
    """GenEval's article rule: 'an' before a vowel, else 'a'."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"
