"""Generate a synthetic Chinese role-play dialogue set shaped like the tutorial's huanhuan.json.

Shape targets (from the tutorial's dataset, see /work/shared/QWEN3.md): 3,729 alpaca records
{"instruction", "input": "", "output"}; instruction + output is ~56 characters on average and 304 at
most; in the tutorial's prompt format the answer is about a third of the tokens. The text is built
from a small phrase vocabulary written for this benchmark (palace-drama flavoured); it is not taken
from any real dataset. Deterministic for a given --seed.

    .venv/bin/python benchmarks/make_huanhuan_like.py [--out benchmarks/data/huanhuan_like.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

N_RECORDS = 3729
MAX_CHARS = 304
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "huanhuan_like.json"

# --- vocabulary (written for this benchmark) ---------------------------------------------------
ADDRESS = ["小主", "娘娘", "主子", "姐姐", "妹妹", "皇上", "太后", "贵人", "常在", "嫔妃", "公公", "太医"]
PLACES = [
    "御花园",
    "长春宫",
    "碧桐书院",
    "太液池",
    "景仁宫",
    "翊坤宫",
    "冷宫",
    "养心殿",
    "梅林",
    "储秀宫",
    "佛堂",
    "承乾宫",
]
THINGS = [
    "玉簪",
    "香囊",
    "手炉",
    "书信",
    "绣帕",
    "团扇",
    "步摇",
    "安神汤",
    "红梅",
    "琵琶",
    "折子",
    "暖炉",
    "茶点",
    "药方",
]
TIMES = ["今日", "昨夜", "方才", "入秋以来", "近些日子", "今晨", "前几日", "这几年", "年节时", "开春后"]
FEELINGS = [
    "心中不安",
    "甚是欢喜",
    "有些委屈",
    "辗转难眠",
    "略感疲倦",
    "满心感激",
    "忧心忡忡",
    "十分惦念",
    "百感交集",
    "心绪难平",
]

QUESTIONS = [
    "{a}，{t}{p}可有什么动静？",
    "{a}觉得这{th}该如何处置？",
    "你是谁？",
    "{a}为何{f}？",
    "{t}皇上可曾来过{p}？",
    "这{th}是谁送来的？",
    "{a}，外头都在传{p}的事，可是真的？",
    "{a}要不要去{p}走走？",
    "{t}{a}身子可好些了？",
    "你可还记得{p}的那株红梅？",
    "{a}，奴婢{f}，不知当讲不当讲。",
    "若是{a}问起{th}，该如何回话？",
    "{a}今晚可要去{p}请安？",
    "{a}以为，人心究竟可信几分？",
    "我们{t}该如何自处？",
    "这宫里的日子，{a}可还过得惯？",
    "{a}，{th}已经备好了，可要现在呈上？",
    "听说{p}新来了一位{a}，{a}可曾见过？",
]

OPENERS = [
    "罢了。",
    "你且听我说。",
    "不必多礼。",
    "这话说得不错。",
    "起来吧。",
    "本宫心里有数。",
    "嗯。",
    "你有心了。",
    "莫要声张。",
    "哼。",
    "也好。",
    "难为你想得周到。",
]
SENTENCES = [
    "{p}向来是非多，咱们还是少去为妙",
    "{t}我{f}，只盼一切平安",
    "这{th}做得精巧，只是来历不明，先收起来吧",
    "宫中人多口杂，凡事都要三思而后行",
    "{a}的恩典，我自然铭记于心",
    "既然来了，便好生歇着，不必拘礼",
    "有些话说出口便收不回了，你要记着",
    "我在这宫里多年，什么风浪没见过",
    "你去{p}传个话，就说我{t}便过去",
    "人心隔肚皮，{a}待你好未必是真心",
    "这{th}是当年从{p}带来的，一直舍不得丢",
    "只要咱们行得正坐得端，便不怕旁人议论",
    "{t}的事情，就当没有发生过",
    "世事无常，唯有自己心里清楚才好",
    "若是有人问起，就说我身子不适，不便见客",
    "去把{th}取来，再沏一壶热茶",
    "我并非不念旧情，只是时移世易",
    "你跟了我这些年，我何曾亏待过你",
    "{p}的风景虽好，终究不是久留之地",
    "皇上的心思，谁又能真正猜得透呢",
    "凡事留一线，日后好相见",
    "这宫里的花开了又谢，人来了又走",
]
CLOSERS = ["。", "。", "。", "！", "……", "？"]
LEADINS = [
    "{t}在{p}遇见了{a}，说起{th}的事，",
    "{a}方才差人送了{th}过来，",
    "{t}{a}在{p}多站了一会儿，",
    "奴婢听{p}的宫女说，",
    "{a}{f}，一直念着{p}，",
    "{t}{p}那边来人问起{th}，",
    "{a}，奴婢斗胆问一句，",
    "{t}{a}赏了{th}，",
]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        a=rng.choice(ADDRESS), p=rng.choice(PLACES), th=rng.choice(THINGS), t=rng.choice(TIMES), f=rng.choice(FEELINGS)
    )


def _answer(rng: random.Random, target: int) -> str:
    """Sentences until about `target` characters (at least one)."""
    out = rng.choice(OPENERS) if rng.random() < 0.5 else ""
    while True:
        out += _fill(rng.choice(SENTENCES), rng) + rng.choice(CLOSERS)
        if len(out) >= target:
            return out


def _record(rng: random.Random) -> dict:
    q = _fill(rng.choice(QUESTIONS), rng)
    if rng.random() < 0.75:
        q = _fill(rng.choice(LEADINS), rng) + q
    # Long-tailed answer lengths (lognormal): most answers are one or two sentences, a few are long.
    target = int(min(MAX_CHARS - len(q), max(2, math.exp(rng.gauss(2.8, 0.8)))))
    a = _answer(rng, target)
    if len(q) + len(a) > MAX_CHARS:
        a = a[: MAX_CHARS - len(q) - 1] + "。"
    return {"instruction": q, "input": "", "output": a}


def generate(n: int = N_RECORDS, seed: int = 0) -> list[dict]:
    """`n` unique records; the longest one is stretched to exactly MAX_CHARS characters."""
    rng = random.Random(seed)
    seen, records = set(), []
    while len(records) < n:
        r = _record(rng)
        key = (r["instruction"], r["output"])
        if key in seen:
            continue
        seen.add(key)
        records.append(r)
    # Make the longest record exactly MAX_CHARS long, like the original's maximum.
    i = max(range(n), key=lambda k: len(records[k]["instruction"]) + len(records[k]["output"]))
    r = records[i]
    room = MAX_CHARS - len(r["instruction"])
    text = r["output"]
    while len(text) < room:
        text += _fill(rng.choice(SENTENCES), rng) + "。"
    r["output"] = text[: room - 1] + "。"
    return records


def stats(records: list[dict]) -> dict:
    lengths = [len(r["instruction"]) + len(r["input"]) + len(r["output"]) for r in records]
    return {
        "records": len(records),
        "mean_chars": round(sum(lengths) / len(lengths), 2),
        "max_chars": max(lengths),
        "mean_instruction_chars": round(sum(len(r["instruction"]) for r in records) / len(records), 2),
        "mean_output_chars": round(sum(len(r["output"]) for r in records) / len(records), 2),
    }


def write(path: str | Path = DEFAULT_OUT, n: int = N_RECORDS, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = generate(n, seed)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--n", type=int, default=N_RECORDS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = write(args.out, args.n, args.seed)
    print(path, json.dumps(stats(json.loads(path.read_text(encoding="utf-8"))), ensure_ascii=False))


if __name__ == "__main__":
    main()
