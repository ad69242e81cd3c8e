"""`lorakit eval` on a Chinese persona run (the tutorial's job, in miniature): a tiny Qwen3 trained on a
few Zhen Huan-style records. The Chinese retention and identity questions and Chinese persona
keywords (from the data, or from the config) must be used, and the report must render the CJK text."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.data.replay import bundled_prompts

LORAKIT = str(Path(sys.executable).parent / "lorakit")
RECORDS = [
    ("你是谁？", "臣妾甄嬛，家父是大理寺少卿甄远道。"),
    ("嬛嬛，今日可好？", "回皇上，臣妾一切都好，只是惦念四郎。"),
    ("御花园的梅花开了。", "本宫这就去瞧瞧，皇上可要同去？"),
    ("小主，该用膳了。", "本宫不饿，先把安神汤端来吧。"),
    ("你喜欢什么花？", "臣妾最爱倚梅园的红梅，皇上也知道的。"),
    ("四郎待你如何？", "四郎待臣妾极好，臣妾心中感激。"),
    ("华妃又来找麻烦了。", "本宫自有分寸，你们不必惊慌。"),
    ("皇上驾到！", "臣妾甄嬛恭迎皇上，皇上万福金安。"),
    ("你在想什么？", "臣妾在想，四郎今夜会不会来碎玉轩。"),
    ("天冷了，添件衣裳吧。", "本宫知道了，你也早些歇息。"),
    ("姐姐近来可好？", "妹妹放心，本宫一切安好。"),
    ("你可还记得那年杏花微雨？", "臣妾怎会忘记，那日初见四郎。"),
]


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([LORAKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def zh_run(tmp_path_factory) -> Path:
    """A 2-step LoRA run of qwen3-tiny-random on the Chinese records, evaluated with defaults."""
    root = tmp_path_factory.mktemp("zhrun")
    (root / "huanhuan.json").write_text(
        json.dumps([{"instruction": q, "input": "", "output": a} for q, a in RECORDS], ensure_ascii=False),
        encoding="utf-8",
    )
    (root / "run.yaml").write_text(
        f"model:\n  name: qwen3-tiny-random\ndata:\n  path: {root / 'huanhuan.json'}\n  eval_split: 2\n"
        f"  system: 现在你要扮演皇帝身边的女人--甄嬛\n  replay: 0.2\n"
        f"train:\n  output_dir: {root / 'run'}\n  max_steps: 2\n  batch_size: 4\n  grad_accum: 1\n"
        "  lr: 1.0e-3\n  save_steps: 2\n",
        encoding="utf-8",
    )
    done = _cli("train", root / "run.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli("eval", root / "run", "--max-new-tokens", 4, "--max-prompts", 1)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "eval.out").write_text(done.stdout, encoding="utf-8")
    return root / "run"


def test_replay_uses_the_chinese_prompts_answered_by_the_base(zh_run):
    """data.replay=0.2 of 10 training records: 2 bundled Chinese prompts, answered once by the base."""
    data = json.loads((zh_run / "run.json").read_text(encoding="utf-8"))["data"]
    assert data["replay_wanted"] == 2 and data["replay_language"] == "zh"
    cached = {c["prompt"]: c["answer"] for c in json.loads(Path(data["replay_cache"]).read_text(encoding="utf-8"))}
    used = bundled_prompts("zh")[:2]
    assert set(used) <= set(cached) and data["replay_generated"] + data["replay_bundled"] <= 2
    # a random model may say nothing; empty answers are not trained on
    assert data["replay_samples"] == sum(bool(cached[p]) for p in used)


def test_chinese_sets_and_derived_keywords_are_used(zh_run):
    result = json.loads((zh_run / "eval.json").read_text(encoding="utf-8"))
    assert result["settings"]["language"] == "zh" and "detected" in result["settings"]["language_source"]
    retention = result["retention"]
    assert retention["n"] >= 40 and retention["items"][0]["question"] == "中国的首都是哪座城市？"
    assert result["persona"]["items"][0]["question"] == "你是谁？"
    # keywords derived from the training answers: Chinese 2-grams, the recurring titles first
    keywords = result["persona"]["keywords"]
    assert {"臣妾", "本宫", "皇上", "四郎"} <= set(keywords[:6]), keywords
    assert all(re.fullmatch(r"[\u4e00-\u9fff]{2}", k) for k in keywords)
    out = (zh_run.parent / "eval.out").read_text(encoding="utf-8")
    assert "retention rule" in out and "language zh" in out and "strict" in out


def test_lang_option_and_config_keywords(zh_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(zh_run, copy)
    cfg = (copy / "config.yaml").read_text(encoding="utf-8")
    assert "persona_keywords: []" in cfg  # the resolved config lists every field
    (copy / "config.yaml").write_text(
        cfg.replace("persona_keywords: []", "persona_keywords: [甄嬛, 本宫, 皇上, 四郎]"), encoding="utf-8"
    )
    done = _cli("eval", copy, "--lang", "en", "--max-new-tokens", 2, "--max-prompts", 1)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((copy / "eval.json").read_text(encoding="utf-8"))
    assert result["settings"]["language_source"] == "--lang" and result["retention"]["n"] == 24
    assert result["persona"]["keywords"] == ["甄嬛", "本宫", "皇上", "四郎"]
    assert result["persona"]["source"] == "data.persona_keywords in the run's config"
    bad = _cli("eval", copy, "--lang", "fr")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --lang") and "Traceback" not in bad.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _cjk_fonts() -> list[str]:
    fc = shutil.which("fc-list")
    out = subprocess.run([fc, ":lang=zh", "family"], capture_output=True, text=True).stdout if fc else ""
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(not _cjk_fonts(), reason="no CJK font installed (apt-get install fonts-wqy-microhei)")
def test_report_renders_chinese_in_headless_chromium(zh_run, tmp_path):
    """The page declares UTF-8 and zh-CN, Chromium reads the Chinese back unchanged, and the printed
    page embeds a CJK font for it (no missing-glyph boxes)."""
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (zh_run / "report.html").as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert '<html lang="zh-CN">' in dom and "中国的首都是哪座城市？" in dom and "你是谁？" in dom
    pdf = tmp_path / "report.pdf"
    subprocess.run(
        base + [f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url], capture_output=True, timeout=120, check=True
    )
    fonts = set(re.findall(rb"/BaseFont\s*/([A-Za-z0-9+_-]+)", pdf.read_bytes()))
    cjk = [
        f
        for f in fonts
        if re.search(
            rb"WenQuanYi|WQY|Noto.*CJK|SourceHan|Droid.*Fallback|MicroHei|ZenHei|"
            rb"AR.*PL|UKai|UMing|Han",
            f,
            re.IGNORECASE,
        )
    ]
    assert cjk, f"no CJK font in the printed report; fonts: {sorted(fonts)}"
