"""Chat-template rendering and the assistant-only label mask, checked against exact token sequences."""

import pytest

from lorakit.data import Conversation, Message, load_conversations, tokenize_conversation
from lorakit.data.template import IGNORE, render_with_spans
from lorakit.errors import LorakitError

HUANHUAN_SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"


def expected(tok, pieces):
    """Build ids/labels from (text, trained) pieces, each piece cut at special-token boundaries."""
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def conv(*turns, system=None):
    msgs = [Message("system", system)] if system else []
    for role, content, *rest in turns:
        msgs.append(Message(role, content, rest[0] if rest else None))
    return Conversation(msgs, "test:1")


def supervised_text(tok, out):
    return tok.decode([i for i, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE])


# --- Qwen3 (real tokenizer, real template) ---------------------------------------------------------


def test_huanhuan_record_is_the_qwen3_single_turn_non_thinking_sequence(qwen3_tok, fixtures):
    """The done criterion: a huanhuan alpaca record -> QWEN3.md's sequence, loss on answer + <|im_end|> only."""
    convs = load_conversations(str(fixtures / "huanhuan.json"), system=HUANHUAN_SYSTEM)
    out = tokenize_conversation(qwen3_tok, convs[2], thinking="off")
    # <|im_start|>system\n{S}<|im_end|>\n<|im_start|>user\n你是谁？<|im_end|>\n
    # <|im_start|>assistant\n<think>\n\n</think>\n\n家父是大理寺少卿甄远道。<|im_end|>\n
    golden = [
        151644,
        8948,
        198,
        99601,
        105182,
        102889,
        104937,
        102144,
        106354,
        313,
        109628,
        123591,
        151645,
        198,
        151644,
        872,
        198,
        105043,
        100165,
        11319,
        151645,
        198,
        151644,
        77091,
        198,
        151667,
        271,
        151668,
        271,
        45629,
        99910,
        20412,
        103683,
        101277,
        82647,
        106987,
        109628,
        99427,
        44793,
        1773,
        151645,
        198,
    ]
    assert out["input_ids"] == golden
    assert out["labels"] == [IGNORE] * 29 + golden[29:41] + [IGNORE]
    assert not out["truncated"]
    text = (
        f"<|im_start|>system\n{HUANHUAN_SYSTEM}<|im_end|>\n<|im_start|>user\n你是谁？<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n家父是大理寺少卿甄远道。<|im_end|>\n"
    )
    assert qwen3_tok.decode(out["input_ids"]) == text


@pytest.mark.parametrize("index", range(4))
def test_every_huanhuan_record_matches_the_piecewise_sequence(qwen3_tok, fixtures, index):
    rec = load_conversations(str(fixtures / "huanhuan.json"), system=HUANHUAN_SYSTEM)[index]
    user, answer = rec.messages[1].content, rec.messages[2].content
    ids, labels = expected(
        qwen3_tok,
        [
            (f"<|im_start|>system\n{HUANHUAN_SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n", False),
            ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
            (answer, True),
            ("<|im_end|>", True),
            ("\n", False),
        ],
    )
    out = tokenize_conversation(qwen3_tok, rec)
    assert (out["input_ids"], out["labels"]) == (ids, labels)


def test_qwen3_thinking_on_trains_the_reasoning(qwen3_tok):
    c = conv(("user", "Is 7 prime?"), ("assistant", "Yes.", "7 has no divisors."))
    out = tokenize_conversation(qwen3_tok, c, thinking="on")
    ids, labels = expected(
        qwen3_tok,
        [
            ("<|im_start|>user\nIs 7 prime?<|im_end|>\n<|im_start|>assistant\n", False),
            ("<think>\n7 has no divisors.\n</think>\n\nYes.<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert (out["input_ids"], out["labels"]) == (ids, labels)


def test_qwen3_thinking_off_drops_reasoning(qwen3_tok):
    c = conv(("user", "Is 7 prime?"), ("assistant", "Yes.", "7 has no divisors."))
    out = tokenize_conversation(qwen3_tok, c, thinking="off")
    assert "divisors" not in qwen3_tok.decode(out["input_ids"])
    assert supervised_text(qwen3_tok, out) == "Yes.<|im_end|>"


def test_qwen3_thinking_auto_is_per_sample(qwen3_tok):
    with_r = conv(("user", "q"), ("assistant", "a", "r"))
    without = conv(("user", "q"), ("assistant", "a"))
    assert (
        supervised_text(qwen3_tok, tokenize_conversation(qwen3_tok, with_r, thinking="auto"))
        == "<think>\nr\n</think>\n\na<|im_end|>"
    )
    # No reasoning: rendered as thinking off, so the empty think block is prompt.
    assert supervised_text(qwen3_tok, tokenize_conversation(qwen3_tok, without, thinking="auto")) == "a<|im_end|>"


def test_qwen3_multi_turn_thinking_off(qwen3_tok):
    c = conv(("user", "2+2?"), ("assistant", "4"), ("user", "3+3?"), ("assistant", "6"), system="Be brief.")
    ids, labels = expected(
        qwen3_tok,
        [
            (
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
                False,
            ),
            ("4<|im_end|>", True),
            ("\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
            ("6<|im_end|>", True),
            ("\n", False),
        ],
    )
    out = tokenize_conversation(qwen3_tok, c, thinking="off", train_on="all")
    assert (out["input_ids"], out["labels"]) == (ids, labels)
    last = tokenize_conversation(qwen3_tok, c, thinking="off", train_on="last")
    assert last["input_ids"] == ids
    assert supervised_text(qwen3_tok, last) == "6<|im_end|>"


def test_qwen3_multi_turn_thinking_on_follows_template_for_earlier_turns(qwen3_tok):
    # Qwen3's template drops the reasoning of turns before the last user message.
    c = conv(("user", "a?"), ("assistant", "A", "first thoughts"), ("user", "b?"), ("assistant", "B", "second"))
    out = tokenize_conversation(qwen3_tok, c, thinking="on")
    text = qwen3_tok.decode(out["input_ids"])
    assert "first thoughts" not in text
    ids, labels = expected(
        qwen3_tok,
        [
            ("<|im_start|>user\na?<|im_end|>\n<|im_start|>assistant\n", False),
            ("A<|im_end|>", True),
            ("\n<|im_start|>user\nb?<|im_end|>\n<|im_start|>assistant\n", False),
            ("<think>\nsecond\n</think>\n\nB<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert (out["input_ids"], out["labels"]) == (ids, labels)


# --- SmolLM2 (no thinking support in its template, adds a default system prompt) -------------------

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def test_smollm2_single_turn_exact(smol_tok):
    out = tokenize_conversation(smol_tok, conv(("user", "hi"), ("assistant", "Hello there.")))
    ids, labels = expected(
        smol_tok,
        [
            (SMOL_SYSTEM + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", False),
            ("Hello there.<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert (out["input_ids"], out["labels"]) == (ids, labels)
    assert smol_tok.convert_ids_to_tokens(out["input_ids"][-2]) == "<|im_end|>"


def test_smollm2_multi_turn_exact(smol_tok):
    c = conv(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), system="S")
    ids, labels = expected(
        smol_tok,
        [
            ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", False),
            ("b<|im_end|>", True),
            ("\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n", False),
            ("d<|im_end|>", True),
            ("\n", False),
        ],
    )
    out = tokenize_conversation(smol_tok, c)
    assert (out["input_ids"], out["labels"]) == (ids, labels)


def test_smollm2_thinking_on_writes_reasoning_into_content(smol_tok):
    # The template has no reasoning field; the reasoning goes in as a <think> block and is trained.
    out = tokenize_conversation(smol_tok, conv(("user", "q"), ("assistant", "a", "hmm")), thinking="on")
    assert supervised_text(smol_tok, out) == "<think>\nhmm\n</think>\n\na<|im_end|>"
    off = tokenize_conversation(smol_tok, conv(("user", "q"), ("assistant", "a", "hmm")), thinking="off")
    assert supervised_text(smol_tok, off) == "a<|im_end|>"


# --- truncation and robustness ---------------------------------------------------------------------


def test_truncation_cuts_the_end_and_reports_it(qwen3_tok):
    c = conv(("user", "q"), ("assistant", "word " * 200))
    full = tokenize_conversation(qwen3_tok, c, max_length=4096)
    out = tokenize_conversation(qwen3_tok, c, max_length=50)
    assert out["truncated"] and not full["truncated"]
    assert out["input_ids"] == full["input_ids"][:50] and out["labels"] == full["labels"][:50]


def test_mask_when_the_template_trims_content_and_has_no_prefix_property(smol_tok):
    """A template that trims content and puts a marker after the answer still masks exactly the answer."""
    tok = _with_template(
        smol_tok,
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | trim "
        "+ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n[gen]' }}{% endif %}",
    )
    c = conv(("user", " same "), ("assistant", " same "), ("user", "x"), ("assistant", "same"))
    text, spans = render_with_spans(tok, c)
    assert [text[a:b] for a, b in spans] == ["same<|im_end|>", "same<|im_end|>"]
    # The user's identical text is never labelled: each answer is searched after the turn before it.
    assert spans[0][0] > text.index("user\nsame") + 5


def test_answer_token_that_straddles_the_prompt_boundary_is_trained(smol_tok):
    """Mistral-style `[/INST] Hello`: the token ` Hello` starts in the prompt but is mostly answer."""
    tok = _with_template(
        smol_tok,
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + "
        "' [/INST] ' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}",
    )
    out = tokenize_conversation(tok, conv(("user", "hi"), ("assistant", "Hello there.")))
    assert supervised_text(tok, out) == " Hello there.<|im_end|>"
    assert tok.decode([i for i, lab in zip(out["input_ids"], out["labels"]) if lab == IGNORE]) == "[INST] hi [/INST]"


def test_template_without_chat_template_is_a_clear_error(smol_tok):
    tok = _with_template(smol_tok, None)
    with pytest.raises(LorakitError, match="no chat template"):
        tokenize_conversation(tok, conv(("user", "q"), ("assistant", "a")))


def test_bad_settings_are_errors(qwen3_tok):
    c = conv(("user", "q"), ("assistant", "a"))
    with pytest.raises(LorakitError, match="thinking"):
        tokenize_conversation(qwen3_tok, c, thinking="maybe")
    with pytest.raises(LorakitError, match="train_on"):
        tokenize_conversation(qwen3_tok, c, train_on="first")


def _with_template(tok, template):
    import copy

    t = copy.copy(tok)
    t.chat_template = template
    for attr in ("_lorakit_end_markers", "_lorakit_fingerprint"):
        t.__dict__.pop(attr, None)
    return t
