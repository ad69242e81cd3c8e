"""`lorakit export --overwrite` replaces only a folder lorakit wrote, and never its own source."""

import pytest

from lorakit.errors import LorakitError
from lorakit.exporting.pipeline import export_model


def test_overwrite_refuses_a_folder_lorakit_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(LorakitError, match="not written by lorakit"):
        export_model("qwen3-tiny-random", out, overwrite=True)
    assert (out / "thesis.txt").read_text() == "years of work"


def test_out_inside_the_source_is_refused(tmp_path):
    source = tmp_path / "merged"
    source.mkdir()
    with pytest.raises(LorakitError, match="inside the source"):
        export_model(str(source), source / "gguf")
