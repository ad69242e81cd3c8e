"""Two checks of the `job` stage of gpu_session.sh (the README's job on one GPU).

python3 benchmarks/job_check.py --cap-gib 23.5 CONFIG [key=value ...]
    trains CONFIG as on a card of that size (the caching allocator refuses to grow past the cap, so a
    run that needs more fails with out-of-memory) and prints torch's peak, to set beside
    `lorakit doctor CONFIG --gpu-memory 24`.
python3 benchmarks/job_check.py --openai URL
    waits for an OpenAI-compatible server at URL, then asks it one greedy chat question with the
    official openai client. Needs only `openai` (it runs in vLLM's own environment).
"""

from __future__ import annotations

import argparse
import sys
import time


def train_capped(cap_gib: float, config: str, overrides: list[str]) -> None:
    import torch

    from lorakit.config import load_config
    from lorakit.training import train

    cuda = torch.cuda.is_available()
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total))
    train(load_config(config, overrides), overwrite=True)
    if cuda:
        print(
            f"measured peak: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
            f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved (cap {cap_gib} GiB)",
            flush=True,
        )


def ask(url: str, wait_s: int = 280) -> None:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none")
    for _ in range(wait_s):
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            time.sleep(1)
    reply = client.chat.completions.create(
        model="job", messages=[{"role": "user", "content": "你是谁？"}], temperature=0, max_tokens=24
    )
    choice = reply.choices[0]
    print(f"greedy reply: {choice.message.content!r} ({choice.finish_reason}, {reply.usage})", flush=True)
    if choice.finish_reason not in ("stop", "length"):
        sys.exit(f"unexpected finish_reason {choice.finish_reason!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap-gib", type=float, help="train CONFIG under this GPU memory cap")
    ap.add_argument("--openai", metavar="URL", help="ask the server at URL one greedy question")
    ap.add_argument("config", nargs="?")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.openai:
        ask(args.openai)
    elif args.cap_gib and args.config:
        train_capped(args.cap_gib, args.config, args.overrides)
    else:
        ap.error("give --cap-gib CONFIG [key=value ...] or --openai URL")


if __name__ == "__main__":
    main()
