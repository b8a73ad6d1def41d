"""Dispatch `python -m trio_llm.bench [serve] ...` to the engine or the serving benchmark."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        from trio_llm.bench import serve
        serve.main(argv[1:])
    else:
        from trio_llm.bench import engine
        engine.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
