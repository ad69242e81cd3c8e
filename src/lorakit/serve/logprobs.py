"""Log-probabilities in OpenAI's two wire shapes, from the engine's `TokenLogprob`s.

/v1/completions uses the legacy shape (parallel lists: tokens, token_logprobs, top_logprobs as
{token: logprob} including the chosen token, text_offset); /v1/chat/completions one entry per token
with a list of alternatives. Tokens are named by their own text, special tokens included, as vLLM does.
"""

from __future__ import annotations

from lorakit.inference.engine import Engine, TokenLogprob
from lorakit.serve.protocol import ChatLogprobs, CompletionLogprobs, TokenLogprobEntry, TopLogprob


def completion_logprobs(
    engine: Engine,
    top: int,
    prompt_ids: list[int] | None = None,
    prompt_scores: list[TokenLogprob] | None = None,
    generated: list[TokenLogprob] | None = None,
    offset: int = 0,
) -> CompletionLogprobs:
    """The legacy block: the prompt's tokens first when echoed (the first one has no logprob), then the
    generated ones; `text_offset` counts characters from `offset`."""
    out = CompletionLogprobs()
    entries: list[tuple[int, TokenLogprob | None]] = []
    if prompt_ids:
        entries.append((prompt_ids[0], None))
        entries += [(s.token, s) for s in prompt_scores or []]
    entries += [(s.token, s) for s in generated or []]
    names = _names(engine, entries, top)
    for token, scored in entries:
        text = names[token]
        out.text_offset.append(offset)
        offset += len(text)
        out.tokens.append(text)
        if scored is None:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(scored.logprob)
        alternatives = {names[alt]: value for alt, value in scored.top[:top]}
        alternatives.setdefault(text, scored.logprob)  # the chosen token is always listed
        out.top_logprobs.append(alternatives)
    return out


def chat_logprobs(engine: Engine, top: int, generated: list[TokenLogprob]) -> ChatLogprobs:
    """The chat block: one entry per generated token with its `top` likeliest alternatives."""
    names = _names(engine, [(s.token, s) for s in generated], top)
    return ChatLogprobs(
        content=[
            TokenLogprobEntry(
                token=names[s.token],
                logprob=s.logprob,
                bytes=list(names[s.token].encode()),
                top_logprobs=[
                    TopLogprob(token=names[a], logprob=v, bytes=list(names[a].encode())) for a, v in s.top[:top]
                ],
            )
            for s in generated
        ]
    )


def _names(engine: Engine, entries, top: int) -> dict[int, str]:
    """Text of every token id that appears (chosen or alternative), decoded once each."""
    ids = {token for token, _ in entries}
    ids.update(alt for _, scored in entries if scored is not None for alt, _ in scored.top[:top])
    ordered = sorted(ids)
    return dict(zip(ordered, engine.token_texts(ordered)))
