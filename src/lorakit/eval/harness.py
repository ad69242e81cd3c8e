"""lm-evaluation-harness on lorakit's engine: the model class lm-eval scores, and its tasks checked early.

`LorakitLM` is lm-eval's extension point (a `TemplateLM` registered as "lorakit"): it answers
lm-eval's three request kinds with `lorakit.inference.engine.Engine`, so scoring is batched the
engine's way, works on any transformers version lorakit pins, and a LoRA adapter is switched on or
off per model object (base and fine-tuned share one copy of the weights). Prompts go through the
run's chat template with its thinking setting, as in training.

`load_tasks` and `check_fewshot` run before any model loads: an unknown task, data that is not in
the local cache, or more few-shot examples than a task has stop there with one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from lorakit.errors import LorakitError

# Requests handed to the engine per call: the engine batches inside a call; the bar moves between calls.
REQUESTS_PER_CALL = 64


@register_model("lorakit")
class LorakitLM(TemplateLM):
    """One side of the comparison: `engine` with `adapter` on (a name it loaded) or off (None).

    `enable_thinking` is passed to the chat template (None: the template's default). lm-eval builds it
    from `--model lorakit --model_args run=RUN_DIR[,side=base]` too (in a Python process that has
    imported this module): the run's fine-tuned model, or its base, with the run's thinking setting.
    """

    def __init__(
        self,
        engine=None,
        adapter: str | None = None,
        enable_thinking: bool | None = None,
        label: str | None = None,
        run: str | None = None,
        side: str = "finetuned",
        **_ignored,
    ):
        super().__init__()
        if engine is None:
            if not run:
                raise LorakitError("the lorakit lm-eval model needs run=RUN_DIR in --model_args")
            from lorakit.inference.engine import Engine
            from lorakit.inference.reasoning import thinking_flag
            from lorakit.rundir import open_run

            info = open_run(run)
            engine = Engine.load(info.base_model, {"finetuned": str(info.adapter_dir)})
            adapter = None if side == "base" else "finetuned"
            enable_thinking = thinking_flag(info.config.data.thinking if info.config else "off")
        self.engine = engine
        self.adapter = adapter
        self.enable_thinking = enable_thinking
        self.tokenizer = engine.tokenizer  # lm-eval reads the chat template from here
        self.label = label or (adapter or "base")
        self.tokens_scored = 0

    # ---- what TemplateLM needs -----------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # An empty context is conditioned on BOS, or EOS for tokenizers without one (Qwen), as lm-eval's
        # API models do: so `local-completions` against `lorakit serve` scores the same tokens.
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.engine.max_context

    @property
    def tokenizer_name(self) -> str:
        return self.engine.name.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        with self.engine.tokenizer_lock:
            return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens: list[int], **kwargs) -> str:
        with self.engine.tokenizer_lock:
            return self.tokenizer.decode(tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        kwargs = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        with self.engine.tokenizer_lock:
            return self.tokenizer.apply_chat_template(
                chat_history,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt,
                **kwargs,
            )

    # ---- the three request kinds ---------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether greedy decoding gives it) per request."""
        pairs = [(list(context), list(continuation)) for _, context, continuation in requests]
        return [
            (sum(t.logprob for t in scored), all(t.greedy for t in scored))
            for scored in self._score(pairs, f"{self.label}: loglikelihood", disable_tqdm)
        ]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-probability of whole texts (perplexity tasks), in context-sized disjoint windows."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        pairs, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, windows):
                pairs.append((list(context), list(continuation)))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, scored in zip(owner, self._score(pairs, f"{self.label}: loglikelihood_rolling", disable_tqdm)):
            totals[i] += sum(t.logprob for t in scored)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (unless the task samples) answers up to the task's stop strings; the reasoning of a
        thinking model is split off, so only the answer is graded."""
        from lorakit.inference.decoding import SamplingParams

        groups: dict[tuple, list[int]] = {}
        prompts, settings = [], []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            prompts.append(self.tok_encode(context))
            settings.append(_sampling(dict(gen_kwargs), self.tokenizer.eos_token))
            groups.setdefault(tuple(sorted((k, str(v)) for k, v in settings[-1].items())), []).append(i)
        answers = [""] * len(requests)
        bar = tqdm(total=len(requests), desc=f"{self.label}: generate_until", disable=disable_tqdm, unit="req")
        for members in groups.values():
            params = SamplingParams(**settings[members[0]])
            for start in range(0, len(members), REQUESTS_PER_CALL):
                part = members[start : start + REQUESTS_PER_CALL]
                ids = [_fit(prompts[i], self.max_length - params.max_new_tokens) for i in part]
                for i, answer in zip(part, self.engine.answer_rendered(ids, params, self.adapter)):
                    answers[i] = answer.text
                bar.update(len(part))
        bar.close()
        return answers

    def _score(self, pairs: list[tuple[list[int], list[int]]], desc: str, disable_tqdm: bool):
        """Engine scores of each continuation after its context (the context cut on the left to fit)."""
        out = []
        bar = tqdm(total=len(pairs), desc=desc, disable=disable_tqdm, unit="req")
        for start in range(0, len(pairs), REQUESTS_PER_CALL):
            part = pairs[start : start + REQUESTS_PER_CALL]
            seqs = [(context + continuation)[-self.max_length :] for context, continuation in part]
            last = [min(len(c), len(seq) - 1) for (_, c), seq in zip(part, seqs)]
            out += self.engine.score(seqs, self.adapter, last=last)
            self.tokens_scored += sum(map(len, seqs))
            bar.update(len(part))
        bar.close()
        return out


def _sampling(gen_kwargs: dict, eos: str | None) -> dict:
    """lm-eval's generation settings as SamplingParams fields (greedy unless do_sample)."""
    until = gen_kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else list(until)
    if eos and eos not in until:
        until.append(eos)
    sample = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature", 1.0) or 0) > 0
    settings = {
        "max_new_tokens": int(gen_kwargs.get("max_gen_toks", 256)),
        "stop": until,
        "temperature": float(gen_kwargs.get("temperature", 1.0)) if sample else 0.0,
        "seed": 0,
    }
    if sample and gen_kwargs.get("top_p") is not None:
        settings["top_p"] = float(gen_kwargs["top_p"])
    return settings


def _fit(ids: list[int], room: int) -> list[int]:
    return ids[-max(room, 1) :]


# ---- tasks, checked before the model loads ---------------------------------------------------------
def quiet_lm_eval() -> None:
    """lm-eval logs every setting at INFO and WARNING; lorakit prints its own summary instead."""
    for name in ("lm-eval", "lm_eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_tasks(names: list[str], include_path: str | Path | None = None):
    """lm-eval's TaskManager and the top-level Task or Group objects of `names`, their data loaded.

    The built-in registry (thousands of YAML files, slow to index) is read only when a name is not
    in `include_path`. Unknown names and data that cannot be had are one-line LorakitErrors.
    """
    from lm_eval.tasks import TaskManager

    quiet_lm_eval()
    if include_path is not None and not Path(include_path).is_dir():
        raise LorakitError(f"--include-path {include_path}: no such folder")
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path else None
    if manager is None or not all(_known(manager, n) for n in names):
        manager = TaskManager(include_path=str(include_path) if include_path else None)
    where = "lm-eval's registry" + (f" or {include_path}" if include_path else "")
    for name in names:
        if not _known(manager, name):
            raise LorakitError(f"--tasks: unknown task {name!r}: not in {where} (`lm_eval ls tasks` lists them)")
    built = []
    for name in names:
        try:
            loaded = manager.load([name])
        except Exception as e:  # noqa: BLE001 - datasets raises many types; every one is this task's data
            raise LorakitError(_data_error(name, e)) from None
        top = loaded["groups"].get(name) or loaded["tasks"].get(name)
        built += [top] if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
    return manager, built


def _known(manager, name: str) -> bool:
    return name in manager.all_tasks


def _data_error(name: str, error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = any(word in text for word in ("Couldn't reach", "OfflineMode", "offline", "resolve", "connect"))
    if offline or isinstance(error, (ConnectionError, OSError)):
        return (
            f"task {name}: its data is not in the local cache and cannot be downloaded now ({text[:160]}); "
            "download it first (run once with network access, or see docs/eval.md)"
        )
    return f"task {name}: could not load it: {type(error).__name__}: {text[:200]}"


def leaf_tasks(built) -> dict:
    """{task name: Task} under the objects `load_tasks` returned."""
    from lm_eval.api.group import Group

    leaves = {}
    for item in built:
        for task in item.get_all_tasks() if isinstance(item, Group) else [item]:
            leaves[task.task_name] = task
    return leaves


def check_fewshot(built, num_fewshot: int | None) -> None:
    """A LorakitError when a task has fewer examples to draw shots from than `num_fewshot`."""
    if num_fewshot is None:
        return
    if num_fewshot < 0:
        raise LorakitError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    for name, task in leaf_tasks(built).items():
        if task.get_config("num_fewshot") == 0 and num_fewshot:
            continue  # lm-eval keeps a task's explicit 0 (it ignores --num-fewshot there)
        pool = task.fewshot_docs()
        size = len(pool) if pool is not None else 0
        # Shots drawn from the evaluated split leave out the item being asked.
        same = _fewshot_split(task) == _eval_split(task)
        room = size - 1 if same else size
        if num_fewshot > room:
            raise LorakitError(
                f"--num-fewshot {num_fewshot}: task {name} has only {max(room, 0)} examples to draw "
                "few-shot examples from"
            )


def _fewshot_split(task):
    cfg = task.config
    if cfg.fewshot_split:
        return cfg.fewshot_split
    for has, split in ((task.has_training_docs, cfg.training_split), (task.has_validation_docs, cfg.validation_split)):
        if has():
            return split
    return cfg.test_split


def _eval_split(task):
    return task.config.test_split if task.has_test_docs() else task.config.validation_split
