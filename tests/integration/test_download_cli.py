"""`lorakit download`: built-ins materialise offline; an unreachable hub is one line and exit 2."""

import os
import subprocess
import sys

from lorakit_cli import REPO, cli_env, lorakit


def test_download_builtin_prints_its_cached_folder():
    out = lorakit("download", "qwen3-tiny-random")
    folder = out.stdout.strip().splitlines()[-1]
    assert os.path.isfile(os.path.join(folder, "config.json"))
    assert os.path.isfile(os.path.join(folder, "tokenizer.json"))


def test_download_without_network_is_one_line():
    env = cli_env(HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lorakit", "download", "SomeOrg/NoSuchModel"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "SomeOrg/NoSuchModel" in proc.stderr


def test_train_on_a_hub_id_not_downloaded_says_what_to_run(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  name: Qwen/Qwen3-4B\ndata:\n  path: {tmp_path}/d.json\n")
    proc = lorakit("train", cfg, check=False)
    assert proc.returncode == 2 and "lorakit download Qwen/Qwen3-4B" in proc.stderr
