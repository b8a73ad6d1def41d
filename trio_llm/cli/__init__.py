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


def complete(args: argparse.Namespace) -> int:
    """Continue a prompt with a local GGUF model (the built-in SmolLM2 by default)."""
    from trio_llm.engine.generate import generate_tokens
    from trio_llm.engine.model import Model
    from trio_llm.engine.sampler import Sampler, SamplerOptions
    from trio_llm.testing.models import fetch

    model = Model.load(args.model or fetch(), n_ctx=args.num_ctx, n_threads=args.threads)
    options = SamplerOptions(temperature=args.temperature, seed=args.seed)
    sampler = Sampler(options, model.net.vocab_size)
    tokenizer = model.tokenizer
    ids = tokenizer.encode(args.prompt)
    pending = b""
    for token in generate_tokens(model, ids, sampler, args.num_predict):
        if token in tokenizer.eot_ids:
            break
        pending += tokenizer.token_bytes(token)
        text = pending.decode("utf-8", errors="ignore")
        if text:
            pending = b""
            sys.stdout.write(text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trio-llm", description="Ollama-compatible LLM server")
    parser.add_argument("--version", action="version", version=f"trio-llm {__version__}")
    verbs = parser.add_subparsers(dest="verb")
    p = verbs.add_parser("serve", help="start the Ollama-compatible server (OLLAMA_HOST)")
    p.set_defaults(run=serve)
    add_verbs(verbs)
    add_create(verbs)
    p = verbs.add_parser("complete", help="continue a prompt with a local GGUF model")
    p.add_argument("prompt")
    p.add_argument("--model", help="path to a .gguf file (default: the built-in SmolLM2)")
    p.add_argument("--num-predict", type=int, default=64)
    p.add_argument("--num-ctx", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(run=complete)
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
