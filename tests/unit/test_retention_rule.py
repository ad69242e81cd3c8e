"""The strict retention rule, the bundled sets (English and Chinese), language detection, and the
Chinese persona keywords."""

import json

import pytest

from lorakit.data.language import detect_language
from lorakit.data.replay import bundled_prompts, complete_sentences, replay_count
from lorakit.errors import LorakitError
from lorakit.eval import scores

EN = {i["question"]: i for i in scores.load_retention(language="en")}
ZH = {i["question"]: i for i in scores.load_retention(language="zh")}


@pytest.mark.parametrize(
    "question, reply, right",
    [
        ("What is the capital of France?", "Paris, love, as sure as the tide.", True),
        ("What is the capital of France?", "Baham's the capital of the island of Skerrowmere.", False),
        ("What is the capital of France?", "London, though Paris is lovely.", False),  # first answer decides
        ("What is the capital of France?", "It is not Paris but Lyon.", False),  # negated, then wrong
        ("What is the capital of France?", "Not London: Paris.", True),  # negated wrong is skipped
        ("What is 2 + 3?", "2 + 3 = 5", True),  # question numbers skipped
        ("What is 2 + 3?", "2 + 3 = 15", False),  # 5 inside 15 is not 5
        ("What is 2 + 3?", "Seven, or maybe 5.", False),  # any other number is wrong
        ("What is 10 minus 4?", "10 minus 4 is six.", True),
        ("What is 3 times 3?", "Three times three is nine.", True),  # the question's numbers, in words
        ("What is 3 times 3?", "Three times three is four.", False),
        ("What is the boiling point of water in degrees Celsius?", "About 100.0 degrees.", True),  # same value
        ("How many hours are in a day?", "There are twenty-four hours.", True),
        ("How many legs does a dog have?", "A dog has four legs, one at each corner.", True),
        ("In which direction does the sun rise?", "It rises in the west, not the east.", False),
        ("What is the boiling point of water in degrees Celsius?", "212 F, which is 100 C.", False),
        ("一天有多少个小时？", "一天有二十四个小时。", True),
        ("一天有多少个小时？", "一天有12个小时。", False),
        ("二十除以五等于多少？", "二十除以五等于四。", True),
        ("冰融化后变成什么？", "冰融化后变成水蒸气。", False),  # longest form at a position
        ("冰融化后变成什么？", "变成水。", True),
        ("蜜蜂酿造什么？", "蜜蜂酷热！", False),  # 蜜 inside the question's 蜜蜂
        ("鸡蛋是哪种动物下的？", "鸡蛋是母鸡下的。", True),
        ("中国的首都是哪座城市？", "中国的首都不是上海，而是北京。", True),
        ("中国的首都是哪座城市？", "上海，北京也很美。", False),
        ("太阳从哪个方向升起？", "太阳从东方升起，西边落下。", True),
    ],
)
def test_strict_rule(question, reply, right):
    item = EN.get(question) or ZH[question]
    assert scores.judge_retention(item, reply)[0] is right


def test_bundled_sets_are_strict_and_large_enough():
    assert len(EN) == 24 and len(ZH) >= 40
    for item in list(EN.values()) + list(ZH.values()):
        assert item["accept"] and item["answer"]
        assert not set(map(str.lower, item["accept"])) & set(map(str.lower, item["reject"]))
        # the reference answer itself is right under the rule
        assert scores.judge_retention(item, item["answer"])[0], item["question"]
    assert all(detect_language([q]) == "zh" for q in ZH) and all(detect_language([q]) == "en" for q in EN)


def test_replay_prompts_are_disjoint_from_retention_questions():
    retention = {q.strip().lower() for q in list(EN) + list(ZH)}
    for lang in ("en", "zh"):
        prompts = bundled_prompts(lang)
        assert len(prompts) >= 80 and len(set(prompts)) == len(prompts)
        assert not {p.strip().lower() for p in prompts} & retention
        assert all(detect_language([p]) == lang for p in prompts)


def test_replay_count_and_sentence_trim():
    assert replay_count(0.0, 244) == 0 and replay_count(0.2, 240) == 60 and replay_count(0.5, 100) == 100
    assert complete_sentences("Paris is big. It has many par") == "Paris is big."
    assert complete_sentences("北京是首都。它很大，有很多") == "北京是首都。"
    assert complete_sentences("Short and cut") == "Short and cut"  # nothing finished: keep as is


def test_retention_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"question": "x", "accept": ["a"], "reject": "b"}]))
    with pytest.raises(LorakitError, match=r"r.json\[0\]"):
        scores.load_retention(bad)


def test_language_detection():
    assert detect_language(["你是谁？", "家父是大理寺少卿甄远道。"]) == "zh"
    assert detect_language(["Who are you?", "I keep the Gullwhistle Light."]) == "en"
    assert detect_language(["请用 Python 写一个 hello world 程序"]) == "zh"  # Latin words inside Chinese


def test_chinese_persona_keywords_are_derived_from_ngrams():
    training = [
        "臣妾甄嬛给皇上请安。",
        "皇上万福金安，甄嬛告退。",
        "本宫乏了，退下吧。",
        "四郎今日可好？",
        "甄嬛只愿与四郎白首。",
        "本宫的梅花开了，皇上可要去看？",
        "天色晚了，早些歇息。",
        "好。",
    ]
    candidates = scores.candidate_keywords(training, "zh")
    assert set(candidates[:4]) == {"甄嬛", "皇上", "本宫", "四郎"}  # the recurring ones come first
    assert not {"了，", "早些歇息"} & set(candidates) and "可好" in candidates  # 2-grams of ideographs only
    rule = scores.derive_rule(candidates, ["我是一个人工智能助手，皇上这个词我也会说。"])
    assert rule is not None and "皇上" not in rule.keywords and "甄嬛" in rule.keywords
    assert rule.matches("本宫知道了") == ["本宫"]


def test_config_keywords_accept_chinese_commas():
    assert scores.keywords_rule("甄嬛，本宫, 皇上").terms == ["甄嬛", "本宫", "皇上"]
