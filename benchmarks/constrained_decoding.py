"""Constrained decoding's cost on CPU: tokens/s of lorakit's engine with and without a JSON Schema mask.

SmolLM2-135M-Instruct (real weights, 49k tokens) generates a JSON answer to one prompt, greedy, first
free and then under llguidance's mask for a schema (response_format json_schema); the two runs
alternate so a busy machine slows both alike. The mask's own time per token (bitmask + apply) is
measured apart from the forward pass, also on Qwen3's 151k-token vocabulary.

    python benchmarks/constrained_decoding.py [--tokens 64] [--rounds 3] [--threads 2]

Prints one JSON line; docs/benchmarks.md "Constrained decoding" has the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "country", "population", "landmarks"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "Describe Paris as JSON with city, country, population and landmarks."}]


def mask_cost(model: str, steps: int = 300) -> float:
    """Milliseconds per token for the mask alone (bitmask + applying it), on random logits."""
    from lorakit import models
    from lorakit.inference.constrained import json_grammar

    tok = models.load_tokenizer(models.resolve_model(model))
    eos = {tok.eos_token_id}
    grammar = json_grammar(tok, eos, {"type": "object"})  # free-form object: never ends early
    mask, noise, spent, done = grammar.mask(), torch.Generator().manual_seed(0), 0.0, 0
    while done < steps:
        logits = torch.randn(len(tok), generator=noise) * 4
        start = time.perf_counter()
        mask.apply(logits)
        spent += time.perf_counter() - start
        token = (
            int(torch.argmax(logits))
            if done % 2
            else int(torch.multinomial(torch.softmax(logits, -1), 1, generator=noise))
        )
        if token in eos:  # the object closed: start another
            mask = grammar.mask()
            continue
        mask.accept(token)
        done += 1
    return 1000 * spent / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lorakit.inference.constrained import json_grammar
    from lorakit.inference.engine import Engine, SamplingParams

    engine = Engine.load(args.model, dtype="float32")
    ids = engine.chat_prompt(PROMPT)
    start = time.perf_counter()
    grammar = json_grammar(engine.tokenizer, engine.eos_ids, SCHEMA)
    setup = time.perf_counter() - start  # llguidance's tokenizer view, built once per server
    rates: dict[str, list[float]] = {"free": [], "schema": []}
    texts = {}
    for _ in range(args.rounds):
        for kind, mask in (("free", None), ("schema", grammar.mask)):
            params = SamplingParams(temperature=0, max_new_tokens=args.tokens, token_mask=mask)
            start = time.perf_counter()
            out = engine.generate(ids, params)
            rates[kind].append(out.completion_tokens / (time.perf_counter() - start))
            texts[kind] = out.text
    best = {k: max(v) for k, v in rates.items()}  # best of rounds: the least disturbed by other load
    print(
        json.dumps(
            {
                "model": args.model,
                "threads": args.threads,
                "tokens": args.tokens,
                "rounds": args.rounds,
                "tokens_per_s_free": round(best["free"], 2),
                "tokens_per_s_schema": round(best["schema"], 2),
                "slowdown": round(best["free"] / best["schema"], 3),
                "tokenizer_setup_s": round(setup, 2),
                "mask_ms_per_token": {m: round(mask_cost(m), 3) for m in (args.model, "qwen3-tiny-random")},
                "schema_answer_is_json": _is_json(texts["schema"]),
                "schema_answer": texts["schema"][:200],
            }
        )
    )


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


if __name__ == "__main__":
    main()
