"""Which language a dataset is in, as far as lorakit's bundled sets care: Chinese or English."""

from __future__ import annotations

import re

LANGUAGES = ("en", "zh")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
# Share of letters that must be CJK ideographs for text to count as Chinese. Chinese chat data often
# holds Latin names and code, so a simple majority of letters is not required.
CJK_SHARE = 0.3


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def detect_language(texts: list[str]) -> str:
    """ "zh" when CJK ideographs make up at least CJK_SHARE of the letters in `texts`, else "en"."""
    cjk = sum(len(_CJK.findall(t)) for t in texts)
    latin = sum(len(_LATIN.findall(t)) for t in texts)
    # A Latin word is several letters but carries about what one ideograph does; compare like with like.
    return "zh" if cjk and cjk >= CJK_SHARE * (cjk + latin / 4) else "en"
