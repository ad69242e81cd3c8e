"""The data sub-app in-process (fast); tests/integration/test_data_cli.py runs the real `lorakit data`."""

import json

from typer.testing import CliRunner

from lorakit.cli.data import app

runner = CliRunner()


def test_validate_reports_mixed_schemas_and_column_mapping(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"question": "q", "answer": "a"},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "m"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = runner.invoke(app, ["validate", str(path)])
    assert bad.exit_code == 1 and f"{path}:1: unknown schema" in bad.output
    ok = runner.invoke(app, ["validate", str(path), "--columns", "question=instruction,answer=output"])
    assert ok.exit_code == 0, ok.output
    assert "2 records in 1 file: 2 good, 0 with problems; schemas: alpaca 1, messages 1 (mixed within" in ok.output


def test_validate_forced_format_and_bad_columns_flag(fixtures):
    res = runner.invoke(app, ["validate", str(fixtures / "sharegpt.json"), "--format", "alpaca"])
    assert res.exit_code == 1 and "output: missing (format is alpaca" in res.output
    res = runner.invoke(app, ["validate", str(fixtures / "sharegpt.json"), "--columns", "oops"])
    assert res.exit_code != 0 and "expected source=target" in str(res.exception)


def test_max_errors_zero_prints_only_the_count(fixtures):
    res = runner.invoke(app, ["validate", str(fixtures / "bad.jsonl"), "--max-errors", "0"])
    assert res.exit_code == 1
    assert res.output.splitlines()[0] == "... and 10 more"
