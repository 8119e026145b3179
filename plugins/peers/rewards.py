"""Weighted sums of reward scorers: `rewards=name:w,name[key=value,...]:w` (AR-GRPO's reward_funcs/weights).

AR-GRPO adds its reward functions with weights and `nansum` (docs/reference/peers.md §1.4), so a NaN
from one scorer counts as 0 rather than poisoning the sum; the same here. Every named scorer must
be a reward (`higher_is_better`, scoring an image, usually against its condition, without a
reference image); it is called through `Scorer.score`. Brackets after a name set that scorer's
own parameters, e.g. `clip-score[arch=ViT-B-32]:5` (AR-GRPO's CLIP) or `hpsv2.1[weights=/p/HPS.pt]`.

Class-conditional generators: a text-image scorer (clip-score, hpsv2, pickscore) scores an image
against text, so each class label becomes `class_prompt.format(name)` (AR-GRPO's C2I reward:
"a photo of {WordNet name}"). The names and prompt come from the method's `class_names` file and
`class_prompt`, else from the generator (`Generator.class_names` / `class_prompt`: LlamaGen
ImageNet models know the 1,000 ImageNet names, the shapes world its 24 "colour shape" names); a
scorer's own bracketed `class_names=` / `class_prompt=` wins over both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Condition, Generator
from vapi_bench.plugins.scorers.text_image import TextImageScorer, check_class_prompt, read_class_names

_TERM = re.compile(r"^(?P<name>[^\[\]:=,]+?)\s*(?:\[(?P<options>[^\[\]]*)\])?\s*(?::\s*(?P<weight>[^\[\]:]*))?$")


@dataclass(frozen=True)
class RewardTerm:
    """One reward scorer: its registry name, its weight and its own parameters (from brackets)."""

    name: str
    weight: float = 1.0
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassTexts:
    """How a class-conditional generator's labels read as text (empty names = unknown)."""

    names: tuple[str, ...]
    prompt: str
    generator: str  # for error messages


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets (a scorer's options hold commas too)."""
    parts, depth, current = [], 0, []
    for char in spec:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _parse_options(text: str, part: str, where: str) -> dict[str, str]:
    options = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{where}: scorer option {item!r} in {part!r} is not key=value "
                             "(write rewards=name[key=value,key=value]:weight).")
        options[key.strip()] = value.strip()
    return options


def parse_reward_spec(spec: str, where: str) -> list[RewardTerm]:
    """'a:1,b[k=v]:0.5,c' -> terms a (1), b (0.5, options {k: v}), c (1): a bare name weighs 1."""
    terms: list[RewardTerm] = []
    for part in _split_top_level(spec):
        match = _TERM.match(part)
        if match is None:
            raise UsageError(f"{where}: reward {part!r} is not name:weight or name[key=value,...]:weight.")
        weight = (match["weight"] or "1").strip()
        try:
            value = float(weight)
        except ValueError:
            raise UsageError(f"{where}: reward weight {weight!r} in {part!r} is not a number "
                             "(write rewards=name:weight,name:weight).") from None
        options = _parse_options(match["options"], part, where) if match["options"] else {}
        terms.append(RewardTerm(match["name"].strip(), value, options))
    if not terms:
        raise UsageError(f"{where}: rewards is empty; name at least one reward scorer, e.g. rewards=shapes-class-prob:1.")
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: reward {sorted(n for n in names if names.count(n) > 1)[0]!r} is named twice.")
    return terms


def class_texts(generator: Generator, names_file: str, prompt: str, where: str) -> ClassTexts | None:
    """The class names and prompt of a class-conditional generator (None for text models): the
    method's `class_names` file / `class_prompt` when given, else the generator's own."""
    if generator.conditioning != "class":
        return None
    names = tuple(read_class_names(names_file)) if names_file else tuple(generator.class_names)
    if names and len(names) != generator.num_classes:
        source = f"class_names file {names_file}" if names_file else f"generator '{generator.name}'"
        raise UsageError(f"{where}: {source} names {len(names)} classes but generator '{generator.name}' "
                         f"has {generator.num_classes}; give one name per class, line i = class i.")
    prompt = prompt or generator.class_prompt
    check_class_prompt(prompt)
    return ClassTexts(names, prompt, generator.name)


class RewardMix(nn.Module):
    """Σ_k w_k · r_k(images, conditions), per image, with the parts kept for logging."""

    def __init__(self, spec: str, device: torch.device, where: str, classes: ClassTexts | None = None) -> None:
        super().__init__()
        from vapi_bench import load_scorer

        self.terms = parse_reward_spec(spec, where)
        self.scorers = nn.ModuleList()  # in the order of `terms` (names may hold dots: hpsv2.1)
        for term in self.terms:
            scorer = load_scorer(term.name, **term.options)
            if not scorer.higher_is_better or scorer.needs_reference:
                raise UsageError(f"{where}: scorer {term.name!r} is a distance to a reference image, not a reward "
                                 "(a reward is higher_is_better and needs no reference).")
            if isinstance(scorer, TextImageScorer) and classes is not None:
                _name_classes(scorer, term, classes, where)
            self.scorers.append(scorer.to(device).eval().requires_grad_(False))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, conditions: Sequence[Condition]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {term.name: scorer.score(images, conditions=conditions).float()
                 for term, scorer in zip(self.terms, self.scorers)}
        weighted = torch.stack([term.weight * parts[term.name] for term in self.terms])
        return torch.nansum(weighted, dim=0), parts


def _name_classes(scorer: TextImageScorer, term: RewardTerm, classes: ClassTexts, where: str) -> None:
    """Give a text scorer the generator's class names and prompt, unless its own options set them."""
    own: dict[str, Any] = {}
    if "class_names" not in term.options:
        if not classes.names:
            raise UsageError(
                f"{where}: reward {term.name!r} scores images against text, but the class-conditional generator "
                f"'{classes.generator}' has no class names; give class_names=<file with one class name per line, "
                "line i = class i>.")
        own["names"] = classes.names
    if "class_prompt" not in term.options:
        own["prompt"] = classes.prompt
    scorer.name_classes(**own)
