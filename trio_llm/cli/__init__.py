"""The `trio-llm` command: `serve` runs the server; the other verbs are clients of its HTTP API."""

from __future__ import annotations

import argparse
import sys

from trio_llm import __version__
from trio_llm.cli.create import add_create
from trio_llm.cli.verbs import add_verbs


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    from trio_llm.server import main as serve_main

    return serve_main()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trio-llm", description="Ollama-compatible LLM server")
    parser.add_argument("--version", action="version", version=f"trio-llm {__version__}")
    verbs = parser.add_subparsers(dest="verb")
    p = verbs.add_parser("serve", help="start the Ollama-compatible server (OLLAMA_HOST)")
    p.set_defaults(run=serve)
    add_verbs(verbs)
    add_create(verbs)
    p = verbs.add_parser("help", help="help about any command")
    p.add_argument("command", nargs="?")
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    if args.verb == "help":
        if args.command:
            return main([args.command, "--help"])
        parser.print_help()
        return 0
    from trio_llm.cli.client import CLIError

    try:
        return args.run(args)
    except CLIError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
