"""Constrained decoding with llguidance: a grammar, compiled against a tokenizer, that masks each step's logits.

The server uses it for `tool_choice` "required" or a named function, and for `response_format`
(json_object, json_schema). A `Grammar` is built once per request and validated there (a bad schema is
the request's fault, found before anything is queued); every generated row then gets its own
`GrammarMask` through `SamplingParams.token_mask`, the one hook in `decoding.Sampler`.

Why llguidance (docs/serving.md has the measurements): one 8 MB wheel with no dependencies (xgrammar
pulls triton and a TVM runtime, which a CPU install has no use for); grammars are Lark with JSON
Schemas inlined (`%json {...}`) and tokens by id (`<[151657]>`), so a tool call is written in the
model's own form (Hermes `<tool_call>` blocks) rather than bare JSON; masks are computed lazily by an
Earley parser, so a new schema per request costs no compile step; vLLM and llama.cpp ship it as a backend.
"""

from __future__ import annotations

import copy
import json
import threading
import weakref

import numpy as np
import torch

# Arguments are written the way chat templates render them (`tojson`: ", " and ": " separators, no
# other whitespace): what the model was trained on, and no room for a run of blank lines.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_TOKENIZERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_TOKENIZERS_LOCK = threading.Lock()


class GrammarError(ValueError):
    """A grammar or schema the engine cannot enforce; the message says why (the request's fault)."""


def llg_tokenizer(tokenizer, eos_ids: set[int]):
    """llguidance's view of a Hugging Face tokenizer, built once per tokenizer (~2-6 s for 150k tokens)."""
    import llguidance.hf

    key = tuple(sorted(eos_ids))
    with _TOKENIZERS_LOCK:
        cached = _TOKENIZERS.get(tokenizer, {})
        if key not in cached:
            # n_vocab: the ids the tokenizer can decode; a model's padded embedding rows stay masked.
            cached[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=list(key))
            _TOKENIZERS[tokenizer] = cached
        return cached[key]


class Lark:
    """Writes grammar pieces for one tokenizer: literals, tokens by id, JSON Schemas."""

    def __init__(self, tokenizer, llg):
        self.tokenizer, self.llg = tokenizer, llg

    def text(self, s: str) -> str:
        """A literal; a string that is one special token of the vocabulary becomes that token."""
        token = self.special_token(s)
        return f"<[{token}]>" if token is not None else json.dumps(s)

    def special_token(self, s: str) -> int | None:
        """The id of `s` when the tokenizer has it as one token llguidance treats as special, else None."""
        ids = self.tokenizer.encode(s, add_special_tokens=False)
        if len(ids) == 1 and self.llg.is_special_token(ids[0]):
            return ids[0]
        return None

    @staticmethod
    def json(schema: dict) -> str:
        """An inline JSON Schema (a nonterminal), written in `JSON_STYLE`."""
        schema = copy.deepcopy(schema)
        schema["x-guidance"] = {**JSON_STYLE, **schema.get("x-guidance", {})}
        return "%json " + json.dumps(schema, ensure_ascii=False)


class Grammar:
    """A Lark grammar checked against a tokenizer; `mask()` starts one row's matcher."""

    def __init__(self, lark: str, llg, eos_ids: set[int]):
        import llguidance

        self.lark, self.llg, self.eos_ids = lark, llg, sorted(eos_ids)
        try:
            self.compiled = llguidance.LLMatcher.grammar_from_lark(lark)
            problem = llguidance.LLMatcher.validate_grammar(self.compiled, llg)
        except (ValueError, RuntimeError) as e:
            problem = str(e)
        if problem:
            raise GrammarError(problem.strip().splitlines()[0][:300])

    def mask(self) -> "GrammarMask":
        return GrammarMask(self)


class GrammarMask:
    """One row's matcher: `apply` sets every token the grammar forbids to -inf; `accept` advances it.

    Once the grammar is complete (or broken, which a correct mask never allows) only an end-of-sequence
    token is allowed, so generation ends the ordinary way.
    """

    def __init__(self, grammar: Grammar):
        import llguidance

        self.grammar = grammar
        self.matcher = llguidance.LLMatcher(grammar.llg, grammar.compiled, log_level=0)
        self.vocab = grammar.llg.vocab_size

    def apply(self, logits: torch.Tensor) -> None:
        if self.matcher.is_stopped() or self.matcher.is_error():
            keep = torch.full_like(logits, float("-inf"))
            ids = torch.tensor(self.grammar.eos_ids, device=logits.device)
            keep[ids] = logits[ids]
            logits.copy_(keep)
            return
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        banned = np.unpackbits(bits, bitorder="little")[: self.vocab] == 0
        logits[self.vocab :] = float("-inf")  # padded embedding rows: no token the grammar knows
        if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
            # numpy, single-threaded: torch's masked_fill over 150k entries costs 10-40 ms on a busy
            # 2-core CPU (thread hand-offs), numpy's copyto about 2 ms
            np.copyto(logits.numpy()[: self.vocab], -np.inf, where=banned)
        else:
            logits[: self.vocab].masked_fill_(torch.from_numpy(banned).to(logits.device), float("-inf"))

    def accept(self, token: int) -> None:
        if not (self.matcher.is_stopped() or self.matcher.is_error()):
            self.matcher.consume_token(token)


class BanTokens:
    """A mask that forbids a few token ids (tool_choice "none": the token that opens a tool call)."""

    def __init__(self, ids: list[int]):
        self.ids = list(ids)

    def __call__(self) -> "BanTokens":
        return self

    def apply(self, logits: torch.Tensor) -> None:
        logits[self.ids] = float("-inf")

    def accept(self, token: int) -> None:
        pass


def json_grammar(tokenizer, eos_ids: set[int], schema: dict | None, reasoning: str = "none") -> Grammar:
    """The answer is one JSON value valid under `schema` (None: any JSON object), after optional reasoning."""
    llg = llg_tokenizer(tokenizer, eos_ids)
    lark = Lark(tokenizer, llg)
    body = lark.json(schema if schema is not None else {"type": "object"})
    return Grammar(f"start: {reasoning_prefix(lark, reasoning)}answer\nanswer: {body}\n{REASONING_RULES}", llg, eos_ids)


# Reasoning before a constrained answer (Qwen3 thinks first unless told not to): as vLLM's reasoning
# parsers do, the grammar applies after `</think>`. `reasoning` says where the prompt left off:
# "none" (no reasoning possible, or the template closed it), "open" (the prompt ends inside `<think>`),
# "optional" (the model may open a `<think>` block first).
REASONING_RULES = "THINK_TEXT: /(.|\\n)*/\nGAP: /[ \\t\\n]+/"


def reasoning_prefix(lark: Lark, reasoning: str) -> str:
    """The grammar's opening (ending in a space, or empty) for the reasoning mode; `<think>` tokens must be special."""
    if reasoning == "none":
        return ""
    open_tag, close_tag = lark.special_token("<think>"), lark.special_token("</think>")
    if open_tag is None or close_tag is None:  # a free-text block needs its end as a token to stop at
        return ""
    inside = f"THINK_TEXT <[{close_tag}]> GAP? "
    return inside if reasoning == "open" else f"(<[{open_tag}]> {inside})? "
