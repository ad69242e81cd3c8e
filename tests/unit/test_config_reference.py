"""docs/config.md is the config's own reference: it is regenerated from config.py and never drifts."""

from pathlib import Path

from lorakit.config import field_docs
from lorakit.config_reference import reference_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_the_page_matches_the_config():
    assert PAGE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/config.md is stale: python -m lorakit.config_reference > docs/config.md"
    )


def test_every_key_is_documented_with_a_description():
    page = PAGE.read_text(encoding="utf-8")
    for key, _, description in field_docs():
        assert description, f"{key} has no description in config.py"
        assert f"| `{key}` |" in page
