"""`lorakit serve --engine llama.cpp`: pre-flight checks and --print-command, through the real CLI entry."""

from __future__ import annotations

import shlex

import pytest

from lorakit.cli.main import main


def serve(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--engine", "llama.cpp", *map(str, args)])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_print_command_for_an_export_folder(tmp_path, capsys):
    (tmp_path / "persona-q8_0.gguf").write_bytes(b"GGUF" + bytes(20))
    (tmp_path / "Modelfile").write_text("FROM ./persona-q8_0.gguf\n")
    code, out, _ = serve(
        capsys,
        "--model",
        tmp_path,
        "--print-command",
        "--port",
        8081,
        "--api-key",
        "k",
        "--max-model-len",
        4096,
        "--served-model-name",
        "tamsin",
    )
    assert code == 0
    assert shlex.split(out) == ["llama-server", "-m", str(tmp_path / "persona-q8_0.gguf"), "--alias", "tamsin",
                                "--host", "127.0.0.1", "--port", "8081", "--jinja", "--ctx-size", "4096",
                                "--api-key", "k"]  # fmt: skip


@pytest.mark.parametrize("setup, args, says", [
    (lambda p: (p / "config.json").write_text("{}"), ["--model", "{p}"], "run `lorakit export` on it first"),
    (lambda p: (p / "x.gguf").write_bytes(b"PK\x03\x04"), ["--model", "{p}/x.gguf"], "not a GGUF file"),
    (lambda p: [(p / n).write_bytes(b"GGUF") for n in ("a.gguf", "b.gguf")], ["--model", "{p}"], "2 .gguf files"),
    (lambda p: None, ["--lora-modules", "a={p}"], "not LoRA adapters"),
    (lambda p: None, ["--model", "{p}/missing.gguf"], "no such GGUF file"),
])  # fmt: skip
def test_preflight_refuses_in_one_line(tmp_path, capsys, setup, args, says):
    setup(tmp_path)
    code, _, err = serve(capsys, *[a.format(p=tmp_path) for a in args], "--print-command")
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_missing_llama_server_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORAKIT_LLAMA_SERVER", str(tmp_path / "no-such-llama-server"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(20))
    code, _, err = serve(capsys, "--model", tmp_path / "m.gguf")
    assert code == 2 and "llama-server is not installed" in err
