"""The `trio-llm` command. For now it runs the engine directly; the HTTP verbs come with the API."""

from __future__ import annotations

import argparse
import sys

from trio_llm import __version__


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    from trio_llm.server import main as serve_main

    return serve_main()


def ps(args: argparse.Namespace) -> int:
    """The loaded models, as `ollama ps` prints them."""
    from trio_llm.cli.client import call
    from trio_llm.nursery.ps import human_bytes, parse_rfc3339, processor_text, until_text

    rows = [("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")]
    for m in call("GET", "/api/ps")["models"]:
        rows.append((m["name"], m["digest"][:12], human_bytes(m["size"]),
                     processor_text(m["size"], m.get("size_vram", 0)),
                     str(m.get("context_length", "")),
                     until_text(parse_rfc3339(m["expires_at"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def stop(args: argparse.Namespace) -> int:
    """Unload a model now (keep_alive 0), as `ollama stop` does."""
    from trio_llm.cli.client import call

    call("POST", "/api/generate", {"model": args.model, "keep_alive": 0})
    return 0


def complete(args: argparse.Namespace) -> int:
    """Continue a prompt with a local GGUF model (the built-in SmolLM2 by default)."""
    from trio_llm.engine.generate import generate_tokens
    from trio_llm.engine.model import Model
    from trio_llm.engine.sampler import Sampler, SamplerOptions
    from trio_llm.testing.models import fetch

    model = Model.load(args.model or fetch(), n_ctx=args.num_ctx, n_threads=args.threads)
    options = SamplerOptions(temperature=args.temperature, seed=args.seed)
    sampler = Sampler(options, model.net.params.vocab_size)
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
    verbs.add_parser("ps", help="list running models").set_defaults(run=ps)
    p = verbs.add_parser("stop", help="stop a running model")
    p.add_argument("model")
    p.set_defaults(run=stop)
    p = verbs.add_parser("complete", help="continue a prompt with a local GGUF model")
    p.add_argument("prompt")
    p.add_argument("--model", help="path to a .gguf file (default: the built-in SmolLM2)")
    p.add_argument("--num-predict", type=int, default=64)
    p.add_argument("--num-ctx", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(run=complete)
    args = parser.parse_args(argv)
    if args.verb is None:
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
