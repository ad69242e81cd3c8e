"""Reasoning: the thinking setting, and splitting a model's output into reasoning (a leading
`<think>...</think>` block) and the answer.

Used by `Engine.answer` and its batched and streamed forms, and by serve, whose worker generates.
"""

from __future__ import annotations

__all__ = ["THINK_OPEN", "THINK_CLOSE", "THINKING", "thinking_flag", "ReasoningSplitter", "split_reasoning"]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# data.thinking (and `lorakit chat --thinking`) -> the chat template's `enable_thinking`. "auto" leaves
# the template its default (Qwen3's thinks); in training "auto" means per sample (lorakit.data.template).
THINKING = {"off": False, "on": True, "auto": None}


def thinking_flag(thinking: "str | bool | None") -> bool | None:
    """The `enable_thinking` to render a prompt with: "off" -> False, "on" -> True, "auto" -> None (the
    template's default); a bool or None is already one and passes through."""
    if thinking is None or isinstance(thinking, bool):
        return thinking
    try:
        return THINKING[thinking]
    except (KeyError, TypeError):
        raise ValueError(f"thinking: expected one of {', '.join(THINKING)} (got {thinking!r})") from None


class ReasoningSplitter:
    """Routes streamed text to reasoning (inside `<think>...</think>`) or to content (the answer).

    A think block counts only at the very start of the output, or from the start when the prompt
    already opened it (`opened=True`). Whitespace around the reasoning and before the answer is
    dropped, so streaming and `split_reasoning` give the same strings.
    """

    def __init__(self, opened: bool = False):
        self.state = "reasoning" if opened else "start"
        self.buf = ""
        self.saw_reasoning = opened
        self._fresh = True  # no reasoning text emitted yet: strip leading whitespace

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        """Add text; return the (reasoning, content) deltas that are certain now, or with `final`
        (the output ends with this text) everything that is left."""
        if final:
            r1, c1 = self.feed(text)
            r2, c2 = self.flush()
            return r1 + r2, c1 + c2
        self.buf += text
        reasoning = content = ""
        while True:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(THINK_OPEN):
                    self.buf, self.state, self.saw_reasoning = head[len(THINK_OPEN) :], "reasoning", True
                elif THINK_OPEN.startswith(head):
                    return reasoning, content  # still could become "<think>": wait
                else:
                    self.state = "content"
            elif self.state == "reasoning":
                if self._fresh:
                    self.buf = self.buf.lstrip()
                end = self.buf.find(THINK_CLOSE)
                if end >= 0:
                    reasoning += self.buf[:end].rstrip()
                    self.buf, self.state = self.buf[end + len(THINK_CLOSE) :], "answer"
                    continue
                # Hold back a partial "</think>" and trailing whitespace (it may precede the tag).
                cut = len(self.buf) - _partial_suffix(self.buf, THINK_CLOSE)
                out = self.buf[:cut].rstrip()
                reasoning += out
                self.buf = self.buf[len(out) :]
                self._fresh = self._fresh and not out
                return reasoning, content
            elif self.state == "answer":
                self.buf = self.buf.lstrip()
                if not self.buf:
                    return reasoning, content
                self.state = "content"
            else:
                content, self.buf = content + self.buf, ""
                return reasoning, content

    def flush(self) -> tuple[str, str]:
        """The (reasoning, content) still held back at the end of the output."""
        rest, self.buf = self.buf, ""
        if self.state == "reasoning":
            return rest.rstrip(), ""
        return "", ("" if self.state == "answer" else rest)


def split_reasoning(text: str, opened: bool = False) -> tuple[str | None, str]:
    """Split a finished output into (reasoning, content); reasoning is None without a think block."""
    splitter = ReasoningSplitter(opened)
    reasoning, content = splitter.feed(text, final=True)
    return (reasoning if splitter.saw_reasoning else None), content


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for k in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0
