"""Thinking split from the answer while the model streams: `<think>reasoning</think>answer`.

The reply is thinking when it opens with the opening tag (leading white space aside), or from
the start when the rendered prompt already ends with that tag; thinking ends at the closing tag,
and the white space after it is dropped. A reply that starts with anything else is all answer.
Text that may be the start of a tag is held back until it is decided, so no tag reaches a
client in pieces.
"""

from __future__ import annotations

import enum


class _State(enum.Enum):
    LOOKING = "looking"      # before the first visible text: does it open with the tag?
    THINKING = "thinking"
    SKIPPING = "skipping"    # after the closing tag: white space before the answer
    ANSWER = "answer"


def _held(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkingParser:
    def __init__(self, opening: str, closing: str, prompt: str = "") -> None:
        self.opening = opening
        self.closing = closing
        self.buffer = ""
        started = prompt.rstrip().endswith(opening)
        self.state = _State.THINKING if started else _State.LOOKING
        self.at_thinking_start = started

    @property
    def in_thinking(self) -> bool:
        """Whether the reply so far is inside its thinking (opened and not yet closed)."""
        return self.state is _State.THINKING

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, answer) that can be passed on now."""
        self.buffer += text
        thinking: list[str] = []
        answer: list[str] = []
        while True:
            if self.state is _State.LOOKING:
                stripped = self.buffer.lstrip()
                if not stripped or (self.opening.startswith(stripped)):
                    break
                if stripped.startswith(self.opening):
                    self.buffer = stripped[len(self.opening):]
                    self.state, self.at_thinking_start = _State.THINKING, True
                    continue
                self.state = _State.ANSWER
            if self.state is _State.THINKING:
                if self.at_thinking_start:
                    self.buffer = self.buffer.lstrip()
                    if not self.buffer:
                        break
                    self.at_thinking_start = False
                end = self.buffer.find(self.closing)
                if end < 0:
                    keep = _held(self.buffer, self.closing)
                    thinking.append(self.buffer[:len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                    break
                thinking.append(self.buffer[:end])
                self.buffer = self.buffer[end + len(self.closing):]
                self.state = _State.SKIPPING
            if self.state is _State.SKIPPING:
                self.buffer = self.buffer.lstrip()
                if not self.buffer:
                    break
                self.state = _State.ANSWER
            answer.append(self.buffer)
            self.buffer = ""
            break
        return "".join(thinking), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """What is left at the end of the reply."""
        rest, self.buffer = self.buffer, ""
        if self.state is _State.THINKING:
            return rest, ""
        if self.state is _State.LOOKING:
            return "", rest
        return "", rest.lstrip() if self.state is _State.SKIPPING else rest
