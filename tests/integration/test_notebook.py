"""examples/huanhuan.ipynb runs top to bottom in a real Jupyter kernel (nbclient + ipykernel), on the
tiny built-in qwen3-tiny-random and ten records, so the notebook cannot go stale against the API; its
last cell runs DPO on the merged fine-tune with pairs made from the eval's answers."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "huanhuan.ipynb"


def _parameters(tmp: Path) -> str:
    overrides = {
        "model.name": "qwen3-tiny-random",
        "model.source": "hf",
        "model.dtype": "float32",
        "data.eval_split": 2,
        "train.max_steps": 3,
        "train.logging_steps": 1,
        "train.save_steps": 3,
        "train.lr": 1e-3,
        "train.device": "cpu",
        "train.threads": 1,
        "tracking.backends": [],
    }
    return (
        f"CONFIG = {str(ROOT / 'configs' / 'qwen3-4b-huanhuan.yaml')!r}\n"
        f"DATA = {str(tmp / 'huanhuan.json')!r}\nOUT = {str(tmp / 'run')!r}\n"
        f"OVERRIDES = {overrides!r}\nEVAL = {{'max_new_tokens': 4, 'max_prompts': 2}}\n"
        f"MERGED = {str(tmp / 'merged')!r}\n"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebook")
    records = [
        {"instruction": q, "input": "", "output": f"臣妾是甄嬛。{q}"}
        for q in (
            "你是谁？",
            "你叫什么名字？",
            "你住在哪里？",
            "皇上在哪里？",
            "今天天气如何？",
            "你喜欢什么花？",
            "讲个故事。",
            "一加一等于几？",
            "说你好。",
            "现在几点？",
        )
    ]
    (tmp / "huanhuan.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook needs exactly one cell tagged `parameters`"
    params[0].source = _parameters(tmp)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the kernel inherits it: shared test machines
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}).execute()
    return nb, tmp


def _outputs(nb, snippet: str) -> list:
    cells = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert cells, snippet
    return cells[0].outputs


def test_notebook_trains_plots_evaluates_chats_and_merges(executed):
    nb, tmp = executed
    assert (tmp / "run" / "run.json").is_file() and (tmp / "run" / "eval.json").is_file()
    assert (tmp / "merged" / "config.json").is_file()
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "run.plot()")), "no inline loss plot"
    table = "".join(o.get("data", {}).get("text/plain", "") for o in _outputs(nb, "run.metrics["))
    assert "loss" in table and "3" in table
    chat = [o for o in _outputs(nb, "run.chat(") if "text/plain" in o.get("data", {})]
    assert chat and isinstance(eval(chat[0]["data"]["text/plain"]), str)
    trained = "".join(o.get("text", "") for o in _outputs(nb, "lorakit.train("))
    assert "train" in trained and "3/3" in trained, "no progress bar from lorakit.train"
    dpo = tmp / "run-dpo"
    assert (dpo / "adapter" / "adapter_model.safetensors").is_file() and (tmp / "run-pairs.jsonl").is_file()
    metrics = "".join(o.get("data", {}).get("text/plain", "") for o in _outputs(nb, "dpo_run.metrics["))
    assert "accuracy" in metrics and "margin" in metrics, metrics
