"""Caption cleaning applied before T5 encoding (`FoundationVision/LlamaGen: language/t5.py`).

LlamaGen's T5Embedder (from PixArt / DeepFloyd-IF) cleans every caption twice with the same
regular expressions before tokenising; its T5 features, and so the t2i model, were produced
with that text. FLAN-T5's tokenizer is case-sensitive, so skipping the cleaning (which lowercases)
changes the features. The HTML step uses the standard library's parser instead of BeautifulSoup
(both keep only the text nodes).
"""
from __future__ import annotations

import html
import re
import urllib.parse as ul
from html.parser import HTMLParser

from vapi_bench.errors import UsageError

_URL_PATTERNS = [
    r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))",
    r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))",
]
_CJK_RANGES = [
    r"[\u31c0-\u31ef]+", r"[\u31f0-\u31ff]+", r"[\u3200-\u32ff]+", r"[\u3300-\u33ff]+",
    r"[\u3400-\u4dbf]+", r"[\u4dc0-\u4dff]+", r"[\u4e00-\u9fff]+",
]
_DASHES = (
    r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0"
    r"\uFE31\uFE32\uFE58\uFE63\uFF0D]+"
)
_BAD_PUNCT = re.compile(r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)" + r"\(" + r"\]" + r"\[" + r"\}" + r"\{" + r"\|" + "\\\\" + r"\/" + r"\*" + r"]{1,}")
_SEPARATORS = re.compile(r"(?:\-|\_)")

# (pattern, replacement) applied in order after URL/HTML removal and dash/quote normalisation
_AFTER_NORMALISATION = [
    (r"&quot;?", ""),
    (r"&amp", ""),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),  # ip addresses
    (r"\d:\d\d\s+$", ""),  # article ids
    (r"\\n", " "),
    (r"#\d{1,3}\b", ""),
    (r"#\d{5,}\b", ""),
    (r"\b\d{6,}\b", ""),
    (r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", ""),  # file names
    (r"[\"\']{2,}", r'"'),
    (r"[\.]{2,}", r" "),
]
_AFTER_BASIC_CLEAN = [
    (r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),
    (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),
    (r"\b\d+[a-zA-Z]+\d+\b", ""),
    (r"(worldwide\s+)?(free\s+)?shipping", ""),
    (r"(free\s)?download(\sfree)?", ""),
    (r"\bclick\b\s(?:for|on)\s\w+", ""),
    (r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", ""),
    (r"\bpage\s+\d+\b", ""),
    (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" "),
    (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),
    (r"\b\s+\:\s+", r": "),
    (r"(\D[,\./])\b", r"\1 "),
    (r"\s+", " "),
]
_EDGES = [
    (r"^[\"\']([\w\W]+)[\"\']$", r"\1"),
    (r"^[\'\_,\-\:;]", r""),
    (r"[\'\_,\-\:\-\+]$", r""),
    (r"^\.\S+$", ""),
]


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(text: str) -> str:
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def _basic_clean(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        raise UsageError("T5 caption cleaning needs the `ftfy` package: pip install ftfy.") from None
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _clean_once(caption: str) -> str:
    caption = ul.unquote_plus(str(caption)).strip().lower()
    caption = re.sub("<person>", "person", caption)
    for pattern in _URL_PATTERNS:
        caption = re.sub(pattern, "", caption)
    caption = _html_text(caption)
    caption = re.sub(r"@[\w\d]+\b", "", caption)
    for pattern in _CJK_RANGES:
        caption = re.sub(pattern, "", caption)
    caption = re.sub(_DASHES, "-", caption)
    caption = re.sub(r"[`´«»“”¨]", '"', caption)
    caption = re.sub(r"[‘’]", "'", caption)
    for pattern, replacement in _AFTER_NORMALISATION:
        caption = re.sub(pattern, replacement, caption)
    caption = re.sub(_BAD_PUNCT, r" ", caption)
    caption = re.sub(r"\s+\.\s+", r" ", caption)
    if len(_SEPARATORS.findall(caption)) > 3:  # this-is-a-slug / this_is_a_slug
        caption = _SEPARATORS.sub(" ", caption)
    caption = _basic_clean(caption)
    for pattern, replacement in _AFTER_BASIC_CLEAN:
        caption = re.sub(pattern, replacement, caption)
    for pattern, replacement in _EDGES:
        caption = re.sub(pattern, replacement, caption)
    return caption.strip()


def clean_caption(caption: str) -> str:
    """The official two-pass caption cleaning (lowercase, URLs/HTML/ids/file names removed...)."""
    return _clean_once(_clean_once(caption))
