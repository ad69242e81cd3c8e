"""Optional scoring of answers by a judge model behind an OpenAI-compatible endpoint.

Each answer is graded alone (not base against fine-tuned in one prompt), so the order in which the
two are shown cannot sway the judge. The prompt is fixed and printed in the report.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from lorakit import settings
from lorakit.errors import LorakitError

JUDGE_PROMPT = """You are grading one answer of an AI assistant.

Question:
{question}
{reference}
Answer to grade:
{answer}

Rate how helpful, correct and on-topic the answer is, from 1 (useless) to 10 (excellent).
Reply with the number only."""

REFERENCE_BLOCK = "\nA good reference answer (for comparison, need not match word for word):\n{reference}\n"
_SCORE = re.compile(r"\b(10|[1-9])\b")


def judge_prompt(question: str, answer: str, reference: str | None) -> str:
    """The exact text sent to the judge for one answer."""
    ref = REFERENCE_BLOCK.format(reference=reference) if reference else ""
    return JUDGE_PROMPT.format(question=question, reference=ref, answer=answer or "(empty answer)")


def parse_score(reply: str | None) -> int | None:
    """The first whole number 1..10 in the judge's reply; None when there is none."""
    match = _SCORE.search(reply or "")
    return int(match.group(1)) if match else None


def api_base(url: str) -> str:
    """Accept `http://host:port` as well as `http://host:port/v1` (the client wants the latter)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LorakitError(f"--judge-url {url!r}: expected http(s)://HOST:PORT[/v1]")
    url = url.rstrip("/")
    return url + "/v1" if parsed.path in ("", "/") else url


def _client(url: str):
    try:
        import openai
    except ImportError:
        from lorakit.install import install_command

        raise LorakitError(f"--judge-url needs the openai client: {install_command('openai', 'install')}") from None
    # Local servers (lorakit serve, vLLM) accept any key; a hosted judge reads the usual variable.
    key = settings.judge_api_key() or "none"
    return openai.OpenAI(base_url=api_base(url), api_key=key, max_retries=1, timeout=120)


def run_judge(url: str, model: str | None, items: list[dict], progress=None) -> dict:
    """Grade the greedy answers of both models.

    `items` are {"prompt", "reference", "base", "finetuned"}. A judge that cannot be reached stops
    the judging (the rest of the evaluation stands) and its error is reported.
    """
    import openai

    client = _client(url)
    result = {"url": url, "model": model, "prompt_template": JUDGE_PROMPT, "items": [], "error": None}
    try:
        if model is None:
            # A server that serves one model (lorakit serve, vLLM) names it here.
            model = result["model"] = client.models.list().data[0].id
        for item in items:
            row = {"prompt": item["prompt"]}
            for side in ("base", "finetuned"):
                text = judge_prompt(item["prompt"], item[side], item.get("reference"))
                reply = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=16
                )
                content = reply.choices[0].message.content or ""
                row[f"{side}_reply"] = content
                row[f"{side}_score"] = parse_score(content)
                if progress:
                    progress()
            result["items"].append(row)
    except (openai.OpenAIError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        result["error"] = f"{type(e).__name__}: {first[:300]}"
    for side in ("base", "finetuned"):
        scores = [r[f"{side}_score"] for r in result["items"] if r.get(f"{side}_score") is not None]
        result[f"{side}_mean"] = sum(scores) / len(scores) if scores else None
        result[f"{side}_scored"] = len(scores)
    result["n"] = len(result["items"])
    return result
