"""The progress display of pull/push/create: bars with bytes, percentage, speed and time left
on a terminal; plain lines, one per step and per tenth of a transfer, anywhere else."""

from __future__ import annotations

import io

from trio_llm.cli.progress import ProgressView, label, show_progress

DIGEST = "sha256:1a2b3c4d5e6f" + "0" * 52
PULL = [
    {"status": "pulling manifest"},
    *({"status": f"pulling {DIGEST}", "digest": DIGEST, "total": 98_362_432,
       "completed": done} for done in range(0, 98_362_433, 4_000_000)),
    {"status": f"pulling {DIGEST}", "digest": DIGEST, "total": 98_362_432,
     "completed": 98_362_432},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as a real tty would."""

    def isatty(self) -> bool:
        return True


def test_labels_shorten_digests_as_ollama_prints_them() -> None:
    assert label({"status": f"pulling {DIGEST}", "digest": DIGEST}) == "pulling 1a2b3c4d5e6f"
    assert label({"status": "writing blob", "digest": DIGEST}) == "writing blob 1a2b3c4d5e6f"
    assert label({"status": "pushing 1a2b3c4d5e6f", "digest": DIGEST}) == "pushing 1a2b3c4d5e6f"
    assert label({"status": "quantizing F16 model to Q4_K_M", "digest": "0" * 19}) == \
        "quantizing F16 model to Q4_K_M"


def test_plain_output_prints_each_step_once_and_each_tenth_of_a_transfer() -> None:
    out = io.StringIO()
    show_progress(PULL, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1:12] == [f"pulling 1a2b3c4d5e6f {10 * i}%" for i in range(11)]
    assert lines[12:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_bar_with_bytes_percentage_and_speed() -> None:
    out = Terminal()
    show_progress(PULL, out)
    text = out.getvalue()
    assert "\r" in text                      # redrawn in place
    final = text.split("\r")[-1]
    assert "pulling 1a2b3c4d5e6f: 100%" in text
    assert "98.4MB/98.4MB" in text
    assert "B/s" in text                     # speed
    assert final.rstrip().endswith("success")
    assert text.index("pulling manifest") < text.index("pulling 1a2b3c4d5e6f")


def test_a_view_closed_early_leaves_no_open_bar() -> None:
    out = Terminal()
    view = ProgressView(out)
    view.show(PULL[1])
    view.show(PULL[3])
    view.close()
    assert view.bars == {}
