"""GRPO rollouts through a generation server (`train.generation_server`): a real `lorakit serve` subprocess
with vLLM's runtime LoRA API, against the in-process rollout of the same run.

lorakit's server samples a seeded request with the same Sampler as the in-process rollout, so the same seeds
must give the same completions and therefore the same adapter, bit for bit. Also: the runtime LoRA routes
are off unless asked for (as in vLLM), and a server that is unreachable or refuses the adapter stops the
run with one line and no checkpoint for the step.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from lorakit_cli import lorakit
from test_serve import Server, free_port
from test_train_cli import adapter, assert_same_adapter, train
from test_train_grpo import _resume, data, grpo_config  # noqa: F401  (data: the module's prompts fixture)

from lorakit.errors import LorakitError

SERVER_ARGS = ["--model", "qwen3-tiny-random", "--dtype", "float32"]
# the tiny random model writes random tokens: some hold a lowercase ASCII letter, some not, so groups differ
# in reward and the steps train (equal rewards would leave the adapter at zero, equal whatever sampled it)
VARIED = {"function": "lorakit.training.rewards_builtin:regex_match", "args": {"pattern": "[a-z]"}}
QUICK = {"max_steps": 2, "num_iterations": 1, "beta": 0.0, "eval_steps": 100, "save_steps": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server([*SERVER_ARGS, "--allow-runtime-lora"], tmp_path_factory.mktemp("logs") / "serve.log")
    yield srv
    srv.stop()


def completions(run) -> list:
    return [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]


def evals(run) -> list:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("eval_")} for r in rows if "eval_loss" in r]


def test_server_rollouts_equal_in_process_rollouts(tmp_path, data, server):  # noqa: F811
    sampling = {**QUICK, "temperature": 0.9, "top_p": 0.95, "top_k": 50}  # each must reach the server's sampler
    sampling.update(num_generations=4, rewards=[VARIED])
    local = train(grpo_config(tmp_path, "local", data, **sampling))
    remote = train(grpo_config(tmp_path, "remote", data, generation_server=server.url, **sampling))
    assert completions(remote) == completions(local)
    assert_same_adapter(adapter(local), adapter(remote), atol=0.0)
    assert max(float(w.abs().max()) for k, w in adapter(remote).items() if "lora_B" in k) > 0  # it did train
    assert evals(remote) == evals(local)  # the held-out greedy completions went through the server too
    # a new adapter for each rollout (steps 1 and 2, the final eval), the one before unloaded; the folder
    # keeps only the last
    log = server.log.read_text()
    assert log.count(": loaded LoRA adapter lorakit-remote-") == 3 and log.count(": unloaded LoRA adapter") == 2
    (held,) = (remote / "rollout_adapter").iterdir()
    assert held.name.endswith("-step2") and (held / "adapter_config.json").is_file()
    state = json.loads((remote / "checkpoints" / "checkpoint-1" / "state.json").read_text())
    assert state["objective"]["engine"] == "lorakit"

    # killed after step 1 and resumed through the server: the seeds continue from the checkpoint
    killed = tmp_path / "killed"
    shutil.copytree(remote, killed)
    for later in ("run.json", "adapter", "checkpoints/checkpoint-2", "plots"):
        path = killed / later
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    _resume(grpo_config(tmp_path, "killed", data, generation_server=server.url, **sampling))
    assert_same_adapter(adapter(remote), adapter(killed), atol=0.0)


def test_unreachable_server_stops_with_one_line_and_no_checkpoint(tmp_path, data):  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}"
    done = lorakit("train", grpo_config(tmp_path, "gone", data, generation_server=url, **QUICK), check=False)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: train.generation_server: cannot reach {url} (ConnectError"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "gone" / "checkpoints").exists()


def test_runtime_lora_is_off_by_default_and_the_trainer_says_how_to_turn_it_on(monkeypatch):
    from starlette.testclient import TestClient

    from lorakit.inference.engine import Engine
    from lorakit.serve.app import create_app
    from lorakit.serve.handlers import ServerState
    from lorakit.serve.worker import Worker
    from lorakit.training.generation_server import GenerationServer

    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    engine = Engine.load("qwen3-tiny-random", dtype="float32")
    state = ServerState(engine, Worker(engine, 4), "base", "base")
    client = GenerationServer("http://testserver")
    client.http = TestClient(create_app(state))  # an httpx.Client: the trainer's own requests, in process
    with pytest.raises(LorakitError) as e:
        client.load_adapter("x", "/nowhere")
    assert str(e.value) == (
        "train.generation_server: http://testserver has no runtime LoRA API (/v1/load_lora_adapter is 404): "
        "start the server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (lorakit serve --allow-runtime-lora does it)"
    )
    client.http = TestClient(create_app(state, runtime_lora=True))
    with pytest.raises(LorakitError, match=r"refused \(404\): Loading lora x failed: No adapter found"):
        client.load_adapter("x", "/nowhere")
    state.worker.stop()


def test_the_server_refuses_an_adapter_that_does_not_fit_in_one_answer(tmp_path, server):
    import httpx
    import torch
    from fake_runs import make_run
    from safetensors.torch import load_file, save_file

    folder = make_run(tmp_path / "wrong", "qwen3-tiny-random", 1) / "adapter"
    weights = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in weights if "lora_A" in k)
    weights[key] = torch.zeros(8, 32)  # the model is 64 wide
    save_file(weights, str(folder / "adapter_model.safetensors"))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        refused = http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(folder)})
        missing = http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(tmp_path)})
        unknown = http.post("/v1/unload_lora_adapter", json={"lora_name": "x"})
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert refused.status_code == 400, refused.text
    assert "adapter does not fit this base model" in refused.json()["error"]["message"]
    assert missing.status_code == 404 and unknown.status_code == 404
    assert "x" not in models


def test_serve_vllm_print_command_enables_runtime_lora():
    done = lorakit("serve", "--engine", "vllm", "--model", "qwen3-tiny-random", "--allow-runtime-lora",
                   "--max-lora-rank", "4", "--print-command")  # fmt: skip
    words = done.stdout.split()
    assert words[0] == "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" and words[1:3] == ["vllm", "serve"]
    i = words.index("--enable-lora")
    assert words[i + 1 : i + 5] == ["--max-lora-rank", "8", "--max-loras", "2"]  # 8: vLLM's smallest rank
    assert "--lora-modules" not in words
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}  # the variable alone does it too, as in vLLM
    by_env = lorakit("serve", "--engine", "vllm", "--model", "qwen3-tiny-random", "--print-command", env=env)
    assert "--enable-lora" in by_env.stdout and "--max-lora-rank 64" in by_env.stdout
