"""`lorakit eval --tasks` on lm-evaluation-harness, and `lorakit serve` scored by lm-eval's own client.

One tiny local multiple-choice task (an lm-eval YAML and 20 JSON items written here) on
qwen3-tiny-random with a LoRA adapter whose B is random and non-zero:
- every item's loglikelihoods in eval.json equal those computed here with transformers + peft;
- the real `lm_eval` CLI (`--model local-completions`) against a real `lorakit serve` gets the same
  per-item loglikelihoods and accuracy;
- the server's logprobs (openai client) equal transformers' log-softmax for a prompt and a greedy
  completion;
- bad input is one line and writes nothing.
Everything runs offline (HF_HUB_OFFLINE): lm-eval and datasets never reach the hub.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_runs import make_run
from lorakit_cli import cli_env
from test_serve import Server

BASE = "qwen3-tiny-random"
TASK = "lorakit_tiny_mc"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def write_task(folder: Path, name: str = TASK, dataset: str = "json") -> Path:
    """A multiple-choice task: 20 arithmetic questions, four choices, the answer's index as target."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "question": f"What is {a} plus {b}?",
            "choices": [str(a + b), str(a + b + 1), str(a * b + 3), str(b)],
            "answer": (a * 7 + b) % 4,
        }
        for a, b in ((i % 5 + 1, i // 5 + 2) for i in range(20))
    ]
    (folder / "items.json").write_text(json.dumps(items))
    data = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'items.json'}\n"
        if dataset == "json"
        else f"dataset_path: {dataset}\n"
    )
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n{data}test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n"
    )
    return folder


def run(*args, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=cli_env(**env)
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The task folder, a run (thinking on: the Qwen3 template's default, which lm-eval's client renders
    too) and an env whose datasets cache is private to this module."""
    root = tmp_path_factory.mktemp("lmeval")
    run_dir = make_run(root / "run", BASE, seed=3)
    cfg = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(
        cfg.replace("thinking: 'off'", "thinking: 'on'").replace("thinking: off", "thinking: on")
    )
    assert "thinking: on" in (run_dir / "config.yaml").read_text().replace("'", "")
    env = dict(OFFLINE, HF_DATASETS_CACHE=str(root / "datasets"), HF_HOME=str(root / "hf"))
    return {"root": root, "tasks": write_task(root / "tasks"), "run": run_dir, "env": env}


@pytest.fixture(scope="module")
def evaluated(setup):
    done = run(
        "-m", "lorakit", "eval", setup["run"], "--tasks", TASK, "--include-path", setup["tasks"], env=setup["env"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((setup["run"] / "eval.json").read_text())["benchmarks"], done


def transformers_loglikelihoods(run_dir: Path, items: list[dict]) -> dict[str, list[list[float]]]:
    """Each choice's loglikelihood after the chat-templated question, computed with transformers + peft
    the way lm-eval frames it: the context's trailing whitespace moves to the continuation."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit import models

    path = models.resolve_model(BASE)
    tok = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), run_dir / "adapter"
    ).eval()

    def score(context: str, continuation: str) -> float:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = tok.encode(context, add_special_tokens=False)
        whole = tok.encode(context + continuation, add_special_tokens=False)
        with torch.no_grad():
            logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
        return sum(float(logprobs[p - 1, whole[p]]) for p in range(len(ctx), len(whole)))

    out = {"base": [], "finetuned": []}
    for item in items:
        context = tok.apply_chat_template(
            [{"role": "user", "content": f"Question: {item['question']}\nAnswer:"}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=True,
        )
        # With a chat template lm-eval puts no " " between the prompt and a choice.
        out["finetuned"].append([score(context, c) for c in item["choices"]])
        with model.disable_adapter():
            out["base"].append([score(context, c) for c in item["choices"]])
    return out


def test_eval_tasks_matches_transformers(setup, evaluated):
    bench, done = evaluated
    items = json.loads((setup["tasks"] / "items.json").read_text())
    expected = transformers_loglikelihoods(setup["run"], items)
    rows = sorted(bench["items"][TASK], key=lambda r: r["doc_id"])
    assert len(rows) == 20
    for side in ("base", "finetuned"):
        got = [r[side] for r in rows]
        assert torch.allclose(torch.tensor(got), torch.tensor(expected[side]), atol=1e-4, rtol=0), side
        acc = sum(max(range(4), key=lambda k: ll[k]) == it["answer"] for ll, it in zip(expected[side], items)) / 20
        (result,) = [r for r in bench["results"] if r["task"] == TASK]
        assert result[side]["value"] == pytest.approx(acc) and result[side]["stderr"] > 0
    assert expected["base"] != expected["finetuned"]  # the adapter changes the scores
    assert result["change"] == pytest.approx(result["finetuned"]["value"] - result["base"]["value"])
    assert bench["settings"]["thinking"] == "on" and "chat template" in bench["settings"]["chat_template"]
    page = (setup["run"] / "report.html").read_text()
    assert "Benchmarks (lm-evaluation-harness" in page and TASK in page
    assert TASK in done.stdout and "fine-tuned" in done.stdout
    assert "ETA" in done.stderr or "<" in done.stderr  # tqdm's bar: elapsed<remaining


def test_lm_eval_local_completions_against_lorakit_serve(setup, evaluated):
    """lm-eval's own OpenAI-compatible client (token-id batches, echo + logprobs) scores the served adapter
    exactly as `lorakit eval --tasks` scores base + adapter."""
    bench, _ = evaluated
    server = Server(["--lora-modules", f"tuned={setup['run']}"], setup["root"] / "serve.log")
    out = setup["root"] / "lm_eval_out"
    try:
        done = run(
            "-m",
            "lm_eval",
            "run",
            "--model",
            "local-completions",
            "--model_args",
            f"model=tuned,base_url={server.url}/v1/completions,tokenizer={setup['run'] / 'adapter'},"
            "tokenizer_backend=huggingface,max_retries=1",
            "--batch_size",
            "4",
            "--tasks",
            TASK,
            "--include_path",
            setup["tasks"],
            "--apply_chat_template",
            "--output_path",
            out,
            "--log_samples",
            env=setup["env"],
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob(f"samples_{TASK}_*.jsonl")
    acc = json.loads(results.read_text())["results"][TASK]["acc,none"]
    (ours,) = [r for r in bench["results"] if r["task"] == TASK]
    assert acc == pytest.approx(ours["finetuned"]["value"])
    theirs = {
        s["doc_id"]: [float(r[0][0]) for r in s["resps"]]  # lm-eval writes them as strings
        for s in map(json.loads, samples.read_text().splitlines())
    }
    for row in bench["items"][TASK]:
        assert theirs[row["doc_id"]] == pytest.approx(row["finetuned"], abs=1e-4)


def test_server_logprobs_equal_transformers(setup):
    """Prompt logprobs (echo, max_tokens 0) and a greedy completion's, legacy and chat, with the adapter on."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorakit import models

    path = models.resolve_model(BASE)
    tok = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), setup["run"] / "adapter"
    ).eval()

    def reference(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float().log_softmax(-1)

    server = Server(["--lora-modules", f"tuned={setup['run']}"], setup["root"] / "serve2.log")
    try:
        client = server.client()
        prompt = "The capital of France is"
        ids = tok.encode(prompt, add_special_tokens=False)
        ref = reference(ids)
        r = client.completions.create(model="tuned", prompt=prompt, echo=True, max_tokens=0, logprobs=5)
        lp = r.choices[0].logprobs
        assert r.choices[0].text == prompt and lp.token_logprobs[0] is None and len(lp.tokens) == len(ids)
        want = [float(ref[p - 1, ids[p]]) for p in range(1, len(ids))]
        assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
        top5 = ref[0, : len(tok)].topk(5)
        assert sorted(lp.top_logprobs[1].values(), reverse=True)[:5] == pytest.approx(top5.values.tolist(), abs=1e-4)
        assert "".join(lp.tokens) == prompt and lp.text_offset[1] == len(lp.tokens[0])

        r = client.completions.create(model="tuned", prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
        gen = r.choices[0].logprobs
        greedy = list(ids)
        for _ in range(len(gen.tokens)):  # the reference greedy continuation, over decodable ids
            greedy.append(int(reference(greedy)[-1, : len(tok)].argmax()))
        new_ids = greedy[len(ids) :]
        assert gen.tokens == [tok.decode([t]) for t in new_ids]
        ref = reference(greedy)
        want = [float(ref[len(ids) + k - 1, t]) for k, t in enumerate(new_ids)]
        assert gen.token_logprobs == pytest.approx(want, abs=1e-4)
        assert all(max(top.values()) == pytest.approx(v) for top, v in zip(gen.top_logprobs, gen.token_logprobs))

        # Sampled chat tokens are known to the client by their text only: map texts back to ids.
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        by_text: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            by_text.setdefault(t, []).append(i)
        messages = [{"role": "user", "content": "Name a colour."}]
        chat_ids = tok.encode(
            tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )
        for stream in (False, True):
            kwargs = dict(
                model="tuned", messages=messages, max_tokens=5, temperature=0.9, logprobs=True, top_logprobs=3, seed=1
            )
            if stream:
                entries = [
                    e
                    for c in client.chat.completions.create(stream=True, **kwargs)
                    for ch in c.choices
                    if ch.logprobs
                    for e in ch.logprobs.content
                ]
            else:
                entries = client.chat.completions.create(**kwargs).choices[0].logprobs.content
            assert len(entries) == 5 and all(len(e.top_logprobs) == 3 for e in entries)
            assert all(len(by_text[e.token]) == 1 for e in entries), "a token text shared by several ids"
            new_ids = [by_text[e.token][0] for e in entries]
            ref = reference(chat_ids + new_ids)
            # Sampled at temperature 0.9, reported before temperature: the raw log-softmax.
            want = [float(ref[len(chat_ids) + k - 1, t]) for k, t in enumerate(new_ids)]
            assert [e.logprob for e in entries] == pytest.approx(want, abs=1e-4)
        with pytest.raises(Exception) as bad:
            client.chat.completions.create(model="tuned", messages=messages, logprobs=True, top_logprobs=21)
        assert getattr(bad.value, "status_code", None) == 400
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["unknown", "uncached", "fewshot"])
def test_bad_tasks_one_line_nothing_written(setup, tmp_path, case):
    run_dir = make_run(tmp_path / "run", BASE, seed=4) if case == "unknown" else tmp_path / "run"
    if case != "unknown":
        import shutil

        shutil.copytree(setup["run"], run_dir, ignore=shutil.ignore_patterns("eval.json", "report.html"))
    tasks = write_task(tmp_path / "tasks")
    args = {
        "unknown": ["--tasks", "no_such_task_xyz", "--include-path", tasks],
        "uncached": [
            "--tasks",
            "lorakit_hub_mc",
            "--include-path",
            write_task(tmp_path / "hub", "lorakit_hub_mc", "lorakit-nobody/not-downloaded"),
        ],
        "fewshot": ["--tasks", TASK, "--include-path", tasks, "--num-fewshot", "25"],
    }[case]
    before = sorted(p.name for p in run_dir.iterdir())
    done = run("-m", "lorakit", "eval", run_dir, *args, env=dict(setup["env"], HF_DATASETS_CACHE=str(tmp_path / "ds")))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    want = {
        "unknown": "unknown task 'no_such_task_xyz'",
        "uncached": "task lorakit_hub_mc: its data is not in the local cache",
        "fewshot": f"task {TASK} has only 19 examples",
    }[case]
    assert want in lines[0]
    assert "Loading weights" not in done.stderr  # stopped before any model loaded
    assert sorted(p.name for p in run_dir.iterdir()) == before
