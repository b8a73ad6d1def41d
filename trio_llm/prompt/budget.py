"""What one rendering may spend: wall time, characters produced and loop iterations.

Templates come from model files and requests, so they are untrusted programs. Both dialects
charge every string they build (output and intermediate values alike) to `charge`, and every
loop iteration or call to `tick`; either also checks the clock and the cancel flag, so a
rendering running in a worker thread stops soon after its deadline or its caller's cancellation.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field

from trio_llm.prompt.errors import BudgetExceeded, TemplateFailed

SECONDS = 5.0                    # wall time of one rendering
OUTPUT_CHARS = 16 * 1024 * 1024  # characters built in all (output and intermediate strings)
ITERATIONS = 1_000_000           # loop iterations and calls, all loops together
MAX_WIDTH = 100_000              # a printf/format width or precision, a center() width


@dataclass
class Budget:
    """The allowance of one rendering; not shared between renderings."""

    seconds: float = SECONDS
    output_chars: int = OUTPUT_CHARS
    iterations: int = ITERATIONS
    chars: int = 0
    steps: int = 0
    deadline: float = field(default=0.0)
    cancelled: bool = False

    def start(self) -> Budget:
        self.deadline = time.monotonic() + self.seconds
        return self

    def check(self) -> None:
        if self.cancelled:
            raise TemplateFailed("template error: rendering cancelled")
        if self.deadline and time.monotonic() > self.deadline:
            raise BudgetExceeded("time", f"{self.seconds:g} s")

    def tick(self, count: int = 1) -> None:
        """One loop iteration (or call)."""
        self.steps += count
        if self.steps > self.iterations:
            raise BudgetExceeded("iteration", f"{self.iterations} loop iterations")
        self.check()

    def charge(self, chars: int) -> None:
        """`chars` more characters built (output or an intermediate string or list)."""
        self.chars += chars
        if self.chars > self.output_chars:
            raise BudgetExceeded("output", f"{self.output_chars} characters")
        self.check()

    def allows(self, chars: int) -> None:
        """Refuse, before building it, a value of `chars` characters that would not fit."""
        if chars < 0 or self.chars + chars > self.output_chars:
            raise BudgetExceeded("output", f"{self.output_chars} characters")

    def width(self, width: int) -> None:
        if width > MAX_WIDTH:
            raise BudgetExceeded("output", f"width {width} is above {MAX_WIDTH}")

    def cancel(self) -> None:
        self.cancelled = True


# The budget of the rendering running in this thread (read by the Jinja sandbox's hooks).
CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


def current() -> Budget:
    budget = CURRENT.get()
    if budget is None:                    # rendering outside render(): a fresh default budget
        budget = Budget().start()
        CURRENT.set(budget)
    return budget
