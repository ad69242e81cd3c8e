"""The one sampling and streaming core shared by `chat`, `serve`, `eval`, replay and `Run.chat`.

An `Engine` holds one base model, optionally with several LoRA adapters loaded side by side, and
generates token by token with a KV cache. Text leaves it in `Chunk`s: every chunk carries the new
text, the last one also the finish reason and token counts. Text never splits a multi-byte character
and never shows any part of a stop string.

A conversation is answered by `Engine.answer` (and `answer_batch`, `answer_stream`): the chat
template renders it with the thinking setting, the model generates, and the reasoning is split off
the answer. Every caller that asks a chat model something goes through them.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from lorakit.errors import LorakitError
from lorakit.inference import cpu_head
from lorakit.inference.completion import Chunk, Completion
from lorakit.inference.decoding import Sampler, SamplingParams
from lorakit.inference.reasoning import ReasoningSplitter, thinking_flag
from lorakit.inference.token_logprobs import TokenLogprob, score_rows, token_logprob
from lorakit.models.lora import adapter_off, peft_quietly
from lorakit.rundir import adapter_folder, base_model_of

# Rows per forward pass in `Engine.generate_batch`; longer lists go through in several batches.
BATCH_ROWS = 16
# Log-probabilities held at once by `Engine.score` (rows x scored positions x vocabulary, float32):
# 2**27 is 512 MiB, so a 150k-token vocabulary scores ~880 positions per forward pass.
SCORE_BUDGET = 2**27

__all__ = ["SamplingParams", "Chunk", "Answer", "AnswerDelta", "TokenLogprob", "Engine", "PromptTooLong"]


class PromptTooLong(ValueError):
    """The prompt leaves no room for a new token in the model's context."""


@dataclass
class Answer:
    """A finished reply to a conversation: the answer with the reasoning split off.

    `reasoning` is the text of the leading think block, None when the model wrote none.
    """

    text: str
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class AnswerDelta:
    """A piece of a streamed reply: new reasoning and new answer text (either may be ""), and the
    engine's chunk they came from (its finish reason, counts and logprobs)."""

    reasoning: str
    text: str
    chunk: Chunk


class Engine:
    """A model (plus optional named LoRA adapters) that turns prompts into streamed text.

    One generation runs at a time per engine (`self.lock`); callers in other threads wait.
    """

    def __init__(
        self, model, tokenizer, adapters: list[str] | None = None, max_context: int | None = None, name: str = "model"
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.adapters = list(adapters or [])
        self.name = name
        self.lock = threading.Lock()
        # Fast tokenizers raise "Already borrowed" when two threads use one at once (the server
        # renders prompts while its worker decodes), so every tokenizer call goes through this lock.
        self.tokenizer_lock = threading.Lock()
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.max_context = max_context or _context_length(model)
        # Qwen3 pads its embedding to 151,936 rows but the tokenizer knows 151,669 ids; never sample
        # an id the tokenizer cannot decode.
        self.vocab_limit = len(tokenizer)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if self.device.type == "cpu":
            cpu_head.install(base)
        # transformers 5.x renamed `past_key_values` to `cache`; support both spellings.
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    @classmethod
    def load(
        cls,
        model_ref: str | None,
        adapters: dict[str, str] | None = None,
        dtype: str = "auto",
        device: str = "auto",
        max_context: int | None = None,
    ) -> "Engine":
        """Load a base model and the given adapters (name -> RUN_DIR or adapter folder).

        Without `model_ref` the base comes from the first adapter's run config (`model.name`).
        With several adapters, all share one copy of the base; `adapter=None` uses the bare base.
        """
        from lorakit import models
        from lorakit.models.template_override import use_adapter_template

        adapters = dict(adapters or {})
        folders = {name: adapter_folder(path) for name, path in adapters.items()}
        if model_ref is None:
            if not adapters:
                raise LorakitError("no model given: pass --model or an adapter run directory")
            model_ref = base_model_of(next(iter(adapters.values())))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        path = models.resolve_model(model_ref)
        # the template the adapters were trained with (model.chat_template), else the base's own
        tokenizer = use_adapter_template(models.load_tokenizer(path), list(folders.values()))
        model = models.load_model(path, dtype=dtype, device=device)
        if folders:
            model = attach_adapters(model, folders)
        return cls(model, tokenizer, list(folders), max_context=max_context, name=str(model_ref))

    # ---- prompts -------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict], enable_thinking: bool | None = None, **template_kwargs) -> list[int]:
        """Render messages with the tokenizer's chat template (plus generation prompt) into token ids.

        `enable_thinking` is passed to the template only when given (Qwen3 thinks by default).
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; use a completion prompt instead")
        if enable_thinking is not None:
            template_kwargs["enable_thinking"] = enable_thinking
        with self.tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **template_kwargs
            )
            # The rendered text already holds every special token the template wants.
            return self.tokenizer.encode(text, add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt (with the tokenizer's BOS where it uses one)."""
        with self.tokenizer_lock:
            return self.tokenizer.encode(text, add_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids (special tokens dropped; `<think>` tags are not special and stay)."""
        with self.tokenizer_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_texts(self, ids: list[int]) -> list[str]:
        """Each id's own text, special tokens included (what logprobs name tokens by)."""
        with self.tokenizer_lock:
            return [
                self.tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids
            ]

    def opens_reasoning(self, prompt_ids: list[int]) -> bool:
        """True when the prompt ends inside an open `<think>` block (templates that pre-open it)."""
        with self.tokenizer_lock:
            tail = self.tokenizer.decode(prompt_ids[-4:], skip_special_tokens=False)
        return tail.rstrip().endswith("<think>")

    # ---- conversations: render, generate, split off the reasoning -------------------------------
    def answer(
        self,
        messages: list[dict],
        params: SamplingParams,
        adapter: str | None = None,
        thinking: "str | bool | None" = None,
    ) -> Answer:
        """The reply to one conversation. `thinking` is "off", "on", "auto" (the config's values) or the
        template's `enable_thinking` itself (None: the template's default)."""
        ids = self.chat_prompt(messages, enable_thinking=thinking_flag(thinking))
        return self._answer_of(ids, self.generate(ids, params, adapter))

    def answer_batch(
        self,
        conversations: list[list[dict]],
        params: SamplingParams,
        adapter: str | None = None,
        thinking: "str | bool | None" = None,
    ) -> list[Answer]:
        """Replies to several conversations, in order, decoded together (see `generate_batch`)."""
        flag = thinking_flag(thinking)
        return self.answer_rendered([self.chat_prompt(m, enable_thinking=flag) for m in conversations], params, adapter)

    def answer_rendered(
        self, prompts: list[list[int]], params: SamplingParams, adapter: str | None = None
    ) -> list[Answer]:
        """Replies to prompts already rendered into token ids (lm-eval renders its own), decoded together."""
        done = self.generate_batch(prompts, params, adapter)
        return [self._answer_of(ids, chunk) for ids, chunk in zip(prompts, done)]

    def answer_stream(
        self,
        messages: list[dict],
        params: SamplingParams,
        adapter: str | None = None,
        thinking: "str | bool | None" = None,
        logprobs: int | None = None,
    ) -> Iterator[AnswerDelta]:
        """The reply to one conversation as it is generated: reasoning and answer deltas.

        Raises ValueError at once, as `stream` does; closing the iterator early stops generation.
        """
        ids = self.chat_prompt(messages, enable_thinking=thinking_flag(thinking))
        chunks = self.stream(ids, params, adapter, logprobs)
        return _split_stream(chunks, ReasoningSplitter(self.opens_reasoning(ids)))

    def _answer_of(self, prompt_ids: list[int], chunk: Chunk) -> Answer:
        splitter = ReasoningSplitter(self.opens_reasoning(prompt_ids))
        reasoning, text = splitter.feed(chunk.text, final=True)
        return Answer(
            text,
            reasoning if splitter.saw_reasoning else None,
            chunk.finish_reason,
            chunk.prompt_tokens,
            chunk.completion_tokens,
        )

    # ---- generation ----------------------------------------------------------------------------
    def stream(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None, logprobs: int | None = None
    ) -> Iterator[Chunk]:
        """Generate from `prompt_ids`, yielding text chunks; the last chunk has finish_reason and counts.

        With `logprobs` (0-20), every chunk carries the log-probabilities of its tokens and that many
        alternatives. Raises ValueError at once (not on first iteration) for an unknown adapter or a
        prompt that leaves no room in the context. Closing the iterator early stops generation and
        frees the lock.
        """
        return self._stream(list(prompt_ids), params, adapter, self._budget(prompt_ids, params, adapter), logprobs)

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None, logprobs: int | None = None
    ) -> Chunk:
        """The whole completion as one Chunk (text = all of it)."""
        parts, scores, last = [], [], Chunk("")
        for last in self.stream(prompt_ids, params, adapter, logprobs):
            parts.append(last.text)
            scores += last.logprobs or []
        return Chunk(
            "".join(parts),
            last.finish_reason,
            last.prompt_tokens,
            last.completion_tokens,
            scores if logprobs is not None else None,
            last.token_ids,
        )

    def score(
        self, sequences: list[list[int]], adapter: str | None = None, last: list[int] | None = None, top: int = 1
    ) -> list[list[TokenLogprob]]:
        """Log-probabilities of each sequence's own tokens given the tokens before them (one forward pass
        per batch, no sampling): what the model thinks of a prompt, or of answers to choose from.

        `last[i]` tokens at the end of sequence i are scored (default: all but the first, which has no
        context); each entry also lists the `top` likeliest decodable ids. Values are the log-softmax of
        the raw logits, with `adapter` applied (None = the base model).
        """
        last = [len(s) - 1 for s in sequences] if last is None else list(last)
        for seq, n in zip(sequences, last):
            if not 0 <= n < len(seq):
                raise ValueError(f"cannot score the last {n} tokens of a {len(seq)}-token sequence")
            if len(seq) > self.max_context:
                raise ValueError(f"the sequence has {len(seq)} tokens; the context holds {self.max_context}")
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or 'none'}")
        vocab = self.vocab_limit  # the logits may be a few padded rows wider; the budget is an estimate
        # Longest first, so a batch's rows have similar lengths and the first batch shows the peak memory.
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        done: dict[int, list[TokenLogprob]] = {}
        with self.lock, self._adapter(adapter), torch.inference_mode():
            start = 0
            while start < len(order):
                part = [order[start]]
                while (
                    start + len(part) < len(order)
                    and len(part) < BATCH_ROWS
                    and (len(part) + 1) * (max(last[i] for i in part + [order[start + len(part)]]) + 1) * vocab
                    <= SCORE_BUDGET
                ):
                    part.append(order[start + len(part)])
                done.update(
                    zip(
                        part,
                        score_rows(
                            self.model, [sequences[i] for i in part], [last[i] for i in part], top, self.vocab_limit
                        ),
                    )
                )
                start += len(part)
        return [done[i] for i in range(len(sequences))]

    def generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, adapter: str | None = None
    ) -> list[Chunk]:
        """Whole completions of several prompts (one Chunk each, in order), decoded together.

        Greedy gives the same text as `generate` on each prompt; sampling seeds every row with
        `params.seed`, so a fixed seed reproduces. Raises ValueError before generating anything if
        any prompt is empty or leaves no room in the context. Holds the engine lock throughout.
        """
        budgets = [self._budget(ids, params, adapter) for ids in prompts]
        # Similar lengths share a forward pass: less left padding to compute.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        done: dict[int, Chunk] = {}
        with self.lock, self._adapter(adapter), torch.inference_mode():
            for start in range(0, len(order), BATCH_ROWS):
                part = order[start : start + BATCH_ROWS]
                rows = [Completion(self, list(prompts[i]), params, budgets[i]) for i in part]
                self._decode_rows(rows)
                done.update((i, row.chunk()) for i, row in zip(part, rows))
        return [done[i] for i in range(len(prompts))]

    def _budget(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None) -> int:
        """New tokens allowed for this prompt; ValueError for an unknown adapter or a prompt that does not fit."""
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or 'none'}")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        room = self.max_context - len(prompt_ids)
        if room < 1:
            raise PromptTooLong(f"the prompt has {len(prompt_ids)} tokens; the context holds {self.max_context}")
        return min(params.max_new_tokens, room)

    def _stream(self, prompt_ids, params, adapter, budget, logprobs: int | None = None) -> Iterator[Chunk]:
        with self.lock, self._adapter(adapter), torch.inference_mode():
            row = Completion(self, prompt_ids, params, budget)
            pending: list[TokenLogprob] | None = None if logprobs is None else []
            for token, logits in self._tokens(prompt_ids, row.sampler, budget):
                if pending is not None:
                    pending.append(token_logprob(logits, token, logprobs, self.vocab_limit))
                text = row.take(token)
                if text:
                    yield Chunk(text, None, len(prompt_ids), row.produced, pending)
                    pending = None if logprobs is None else []
                if row.finish:
                    break
            yield Chunk(row.tail(), row.finish, len(prompt_ids), row.produced, pending, row.tokens)

    def _decode_rows(self, rows: list[Completion]) -> None:
        """Run `rows` to their ends together: left-padded prompts, an attention mask, one KV cache.

        A finished row leaves the batch (and the cache) at once, so the others do not pay for it. Rows
        with the same prompt (GRPO's completions of one prompt, a request's `n`) share its prefill: each
        distinct prompt runs once, then every row continues from a copy of its prompt's cache.
        """
        distinct: dict[tuple, int] = {}
        owner = [distinct.setdefault(tuple(r.prompt_ids), len(distinct)) for r in rows]
        prompts = [list(p) for p in distinct]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        live, cache, prefill = list(range(len(rows))), None, True
        while True:
            # Positions count real tokens only, so a padded row sees the same positions as alone.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
            )
            cache = getattr(out, self._cache_arg)
            logits = out.logits[:, -1]
            if prefill:  # from one row per distinct prompt to one per completion
                prefill = False
                index = torch.tensor(owner, device=self.device)
                if len(prompts) < len(rows):
                    cache.batch_select_indices(index)
                    mask = mask[index]
                logits = logits[index]  # a copy per row: a sampler may mask its logits in place
            keep, tokens = [], []
            for b, r in enumerate(live):
                token = rows[r].sampler.pick(logits[b])
                rows[r].take(token)
                if not rows[r].finish:
                    keep.append(b)
                    tokens.append(token)
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, live = mask[index], [live[b] for b in keep]
            ids = torch.tensor(tokens, device=self.device).view(-1, 1)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)

    def _tokens(self, prompt_ids: list[int], sampler: Sampler, budget: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(token id, the raw logits it was picked from), one at a time: one forward pass over the
        prompt, then one per new token."""
        inputs = torch.tensor([prompt_ids], device=self.device)
        cache = None
        for _ in range(budget):
            out = self.model(input_ids=inputs, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
            cache = getattr(out, self._cache_arg)
            logits = out.logits[0, -1]
            token = sampler.pick(logits)
            yield token, logits
            inputs = torch.tensor([[token]], device=self.device)

    @contextlib.contextmanager
    def _adapter(self, adapter: str | None):
        if not self.adapters:
            yield
        elif adapter is None:
            with adapter_off(self.model):
                yield
        else:
            self.model.set_adapter(adapter)
            yield


def _split_stream(chunks: Iterator[Chunk], splitter: ReasoningSplitter) -> Iterator[AnswerDelta]:
    with contextlib.closing(chunks):  # an early close of the answer stops the generation under it
        for chunk in chunks:
            reasoning, text = splitter.feed(chunk.text, final=chunk.finish_reason is not None)
            yield AnswerDelta(reasoning, text, chunk)


def attach_adapters(model, folders: dict[str, Path]):
    from peft import PeftModel

    peft_model = None
    for name, folder in folders.items():
        try:
            if peft_model is None:
                with peft_quietly():
                    peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
            else:
                peft_model.load_adapter(str(folder), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LorakitError(f"{folder}: adapter does not fit this base model: {first[:200]}") from None
    return peft_model


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _context_length(model) -> int:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    return 2048
