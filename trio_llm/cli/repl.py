"""The interactive `trio-llm run MODEL` session, as `ollama run` has it: a `>>> ` prompt whose
messages go to /api/chat with the whole conversation so far, and `/` commands that change the
session (/set), read the model (/show), switch it (/load), store it as a new model (/save).

The session lives in the client: the server is stateless, so each answer sends the system
message, every earlier question and answer, and the options set with `/set parameter`. Ctrl-C
while an answer streams closes the HTTP response, which makes the server cancel the generation.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trio_llm import config
from trio_llm.cli.client import CLIError, call, stream

PROMPT = ">>> "
CONTINUATION = "... "
QUOTES = '"""'
HISTORY_FILE = Path.home() / ".trio-llm" / "history"

HELP = """\
Commands:
  /set            change the session (/? set for the list)
  /show           show the model (/? show for the list)
  /load <model>   switch to another model; the conversation starts afresh
  /save <model>   store this session (model, system, parameters, messages) as a model
  /clear          forget the conversation so far
  /list           list the models on the server
  /bye            leave (so does Ctrl + d)
  /?, /help       this help; /? set, /? show, /? shortcuts for more

Start and end a message with \"\"\" to write it over several lines.
"""

HELP_SET = """\
  /set parameter <name> <value>   a model option for this session, e.g. num_ctx, temperature,
                                  seed, top_k, top_p, num_predict, repeat_penalty, stop
                                  (/set parameter stop A B sets the stop strings)
  /set system <text>              the system message (\"\"\" for several lines)
  /set verbose                    print timings and token rates after each answer
  /set quiet                      stop printing them
  /set format json                ask for answers in JSON
  /set noformat                   plain answers again
  /set history                    remember typed lines (the up arrow recalls them)
  /set nohistory                  stop remembering them
"""

HELP_SHOW = """\
  /show info         the model's architecture, size, quantization and capabilities
  /show license      its license
  /show modelfile    its Modelfile, with this session's system message and parameters
  /show parameters   its parameters, then the ones set in this session
  /show system       the system message in use
  /show template     its prompt template
"""

HELP_SHORTCUTS = """\
  Ctrl + c        stop the answer being written; at an empty prompt: a reminder how to leave
  Ctrl + d        leave (at an empty prompt)
  Up / Down       earlier lines typed in this session
  Ctrl + a / e    start / end of the line
  Ctrl + u / k    delete to the start / end of the line
"""


def model_info(model: str) -> dict[str, Any] | None:
    """The model's /api/show answer, or None when the server does not have it (404)."""
    return call("POST", "/api/show", {"model": model}, missing_ok=True) or None


def ensure_model(model: str) -> dict[str, Any]:
    """The model's /api/show answer, pulling the model first (with progress) if it is missing."""
    info = model_info(model)
    if info is None:
        from trio_llm.cli.verbs import pull
        pull(argparse.Namespace(model=model, insecure=False))
        info = call("POST", "/api/show", {"model": model})
    return info


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's time.Duration prints them: 850ns, 12.5µs, 3.2ms, 1.5s, 2m3.25s."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def unit(value: int, size: int, suffix: str) -> str:
        whole, frac = divmod(value, size)
        digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}{suffix}" if digits else f"{whole}{suffix}"

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return sign + unit(ns, 1_000, "µs")
    if ns < 1_000_000_000:
        return sign + unit(ns, 1_000_000, "ms")
    minutes, rest = divmod(ns, 60_000_000_000)
    hours, minutes = divmod(minutes, 60)
    seconds = unit(rest, 1_000_000_000, "s")
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def stats_text(final: dict[str, Any]) -> str:
    """The `--verbose` summary of one answer, from its final chunk's counters."""
    lines = []

    def add(label: str, value: str) -> None:
        lines.append(f"{label + ':':<22}{value}")

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s"

    for key, label in (("total_duration", "total duration"), ("load_duration", "load duration")):
        if final.get(key):
            add(label, go_duration(final[key]))
    for prefix, label in (("prompt_eval", "prompt eval"), ("eval", "eval")):
        count, ns = final.get(f"{prefix}_count", 0), final.get(f"{prefix}_duration", 0)
        if count:
            add(f"{label} count", f"{count} token(s)")
        if ns:
            add(f"{label} duration", go_duration(ns))
            add(f"{label} rate", rate(count, ns))
    return "\n".join(lines)


def _readline() -> Any:
    """The stdlib readline module (line editing and history for input()), or None."""
    try:
        import readline
    except ImportError:
        return None
    return readline


@dataclass
class Session:
    """What the client remembers between answers: the whole conversation and its settings."""

    model: str
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    verbose: bool = False
    format: str = ""
    history: bool = True
    readline: Any = None

    def request(self) -> dict[str, Any]:
        """The /api/chat body for the next answer: system message, history, options."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {"model": self.model, "messages": system + self.messages}
        if self.options:
            body["options"] = self.options
        if self.format:
            body["format"] = self.format
        return body

    def answer(self, text: str) -> None:
        """Ask one question and stream its answer; Ctrl-C stops it and forgets the question."""
        self.messages.append({"role": "user", "content": text})
        chunks = stream("/api/chat", self.request())
        parts: list[str] = []
        final: dict[str, Any] = {}
        try:
            for item in chunks:
                piece = item.get("message", {}).get("content", "")
                if piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    parts.append(piece)
                if item.get("done"):
                    final = item
        except KeyboardInterrupt:
            chunks.close()      # closes the response: the server cancels the generation
            self.messages.pop()
            print("\n")
            return
        except CLIError:
            self.messages.pop()
            raise
        print("\n" if parts and not parts[-1].endswith("\n") else "")
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        if self.verbose and final:
            print(stats_text(final) + "\n", file=sys.stderr, flush=True)

    def load(self) -> None:
        """Load the model on the server now, so the first answer does not wait for it."""
        call("POST", "/api/generate", {"model": self.model})

    # --- commands -----------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run one `/` command; False when the session should end."""
        words = line.split()
        name = words[0]
        if name in ("/bye", "/exit"):
            return False
        handlers: dict[str, Callable[[str, list[str]], None]] = {
            "/set": self.set, "/show": self.show, "/load": self.switch, "/save": self.save,
            "/clear": self.clear, "/list": self.list_models, "/?": self.help,
            "/help": self.help}
        handler = handlers.get(name)
        if handler is None:
            print(f"Unknown command '{name}'. Type /? for help")
            return True
        try:
            handler(line, words[1:])
        except CLIError as exc:
            print(exc)
        return True

    def help(self, line: str, args: list[str]) -> None:
        topic = args[0] if args else ""
        texts = {"": HELP, "set": HELP_SET, "/set": HELP_SET, "show": HELP_SHOW,
                 "/show": HELP_SHOW, "shortcuts": HELP_SHORTCUTS, "shortcut": HELP_SHORTCUTS}
        print(texts.get(topic, HELP))

    def set(self, line: str, args: list[str]) -> None:
        what = args[0] if args else ""
        if what == "parameter":
            self.set_parameter(args[1:])
        elif what == "system":
            text = line.split(None, 2)[2] if len(args) > 1 else ""
            self.system = text.strip()
            print("Set system message." if self.system else "Cleared system message.")
        elif what in ("verbose", "quiet"):
            self.verbose = what == "verbose"
            print(f"Set '{what}' mode.")
        elif what == "format" and args[1:] == ["json"]:
            self.format = "json"
            print("Set format to 'json' mode.")
        elif what == "noformat":
            self.format = ""
            print("Disabled format.")
        elif what in ("history", "nohistory"):
            self.history = what == "history"
            print(f"Set '{what}' mode.")
        else:
            print(HELP_SET if not what else f"Unknown command '/set {what}'. Type /? for help")

    def set_parameter(self, args: list[str]) -> None:
        """`/set parameter NAME VALUE...`, typed as the Modelfile's PARAMETER is."""
        from trio_llm.errors import InvalidParameter
        from trio_llm.formats.params import PARAMETER_TYPES, STRINGS, parse_value

        if len(args) < 2:
            print("Usage:\n  /set parameter <name> <value>")
            return
        name, values = args[0], args[1:]
        try:
            if PARAMETER_TYPES.get(name) == STRINGS:
                parsed = [parse_value(name, v) for v in values]
                self.options[name] = parsed   # `stop a b` sets the list, as Ollama does
            else:
                self.options[name] = parse_value(name, values[0])
        except InvalidParameter as exc:
            print(f"Couldn't set parameter: {exc}")
            return
        print(f"Set parameter '{name}' to '{', '.join(values)}'")

    def show(self, line: str, args: list[str]) -> None:
        what = args[0] if args else ""
        if what not in ("info", "license", "modelfile", "parameters", "system", "template"):
            print(HELP_SHOW)
            return
        if what == "info":
            from trio_llm.cli.verbs import show
            parts = dict.fromkeys(("modelfile", "parameters", "template", "system", "license"),
                                  False)
            show(argparse.Namespace(model=self.model, **parts))
            print()
            return
        info = call("POST", "/api/show", {"model": self.model})
        if what == "parameters":
            self.show_parameters(info.get("parameters", ""))
        elif what == "system":
            print(self.system or info.get("system") or "No system message was specified.")
        elif what == "modelfile":
            print(self.modelfile(info.get("modelfile", "")))
        else:
            print(info.get(what) or f"No {what} was specified for this model.")
        print()

    def show_parameters(self, model_text: str) -> None:
        from trio_llm.formats.params import show_text

        print("Model defined parameters:")
        print(model_text.rstrip() or "No parameters were specified for this model.")
        if self.options:
            print("\nUser defined parameters:")
            print(show_text(self.options))

    def modelfile(self, text: str) -> str:
        """The model's Modelfile, with this session's system message and parameters added."""
        from trio_llm.formats.params import modelfile_value

        extra = []
        if self.system:
            extra.append(f'SYSTEM """{self.system}"""')
        for name in sorted(self.options):
            value = self.options[name]
            for item in value if isinstance(value, list) else [value]:
                extra.append(f"PARAMETER {name} {modelfile_value(item)}")
        return text.rstrip() + ("\n\n# set in this session\n" + "\n".join(extra) if extra else "")

    def switch(self, line: str, args: list[str]) -> None:
        """`/load MODEL`: use another model; the conversation starts afresh."""
        if len(args) != 1:
            print("Usage:\n  /load <modelname>")
            return
        info = model_info(args[0])
        if info is None:
            print(f"Error: model '{args[0]}' not found")
            return
        print(f"Loading model '{args[0]}'")
        self.model = args[0]
        self.messages = []
        self.load()
        show_saved_messages(info)

    def save(self, line: str, args: list[str]) -> None:
        """`/save NAME`: a new model from this one plus the session's system, options and
        messages (POST /api/create with `from`)."""
        if len(args) != 1:
            print("Usage:\n  /save <modelname>")
            return
        body: dict[str, Any] = {"model": args[0], "from": self.model, "stream": False}
        if self.system:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        if self.messages:
            body["messages"] = self.messages
        call("POST", "/api/create", body)
        print(f"Created new model '{args[0]}'")

    def clear(self, line: str, args: list[str]) -> None:
        self.messages = []
        print("Cleared session context")

    def list_models(self, line: str, args: list[str]) -> None:
        from trio_llm.cli.verbs import list_models
        list_models(argparse.Namespace())
        print()


def show_saved_messages(info: dict[str, Any]) -> None:
    """A model saved with MESSAGE lines continues that conversation (the server prepends
    them to every chat); show it as it went."""
    for message in info.get("messages") or []:
        if message.get("role") == "user":
            print(PROMPT + message.get("content", ""))
        elif message.get("role") == "assistant":
            print(message.get("content", "") + "\n")


def read_message(session: Session) -> str | None:
    """One message or command as typed; a line that starts with \"\"\" (or `/set system
    \"\"\"`) goes on over `... ` lines until one ends with \"\"\". None when Ctrl-C dropped
    the input. EOFError for Ctrl-D."""
    rl = session.readline
    try:
        line = input(PROMPT)
    except KeyboardInterrupt:
        typed = rl.get_line_buffer() if rl is not None else ""
        print("\n" if typed else "\nUse Ctrl + d or /bye to exit.\n", end="")
        return None
    if not session.history and rl is not None and line:
        rl.remove_history_item(rl.get_current_history_length() - 1)
    head, quote, body = line.partition(QUOTES)
    if not quote or (head.strip() and not head.startswith("/set system ")):
        return line
    if body.rstrip().endswith(QUOTES):
        return head + body.rstrip()[:-len(QUOTES)]
    lines = [body]
    try:
        while True:
            more = input(CONTINUATION)
            if more.rstrip().endswith(QUOTES):
                lines.append(more.rstrip()[:-len(QUOTES)])
                return head + "\n".join(lines)
            lines.append(more)
    except KeyboardInterrupt:
        print()
        return None


def take_back_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt even where the parent started us with SIGINT ignored
    (a background job of a non-interactive shell, a CI runner): Python installs no handler
    then, and Ctrl-C could not stop an answer. Only on a terminal, where a person types it."""
    if sys.stdin.isatty() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interactive(model: str, info: dict[str, Any] | None = None) -> int:
    """The REPL: read, answer, repeat until /bye or Ctrl-D. The model must exist."""
    take_back_ctrl_c()
    rl = _readline()
    session = Session(model=model, readline=rl)
    keep_history = rl is not None and not config.get("OLLAMA_NOHISTORY")
    if keep_history:
        try:
            rl.read_history_file(HISTORY_FILE)
        except OSError:
            pass
    try:
        session.load()
    except KeyboardInterrupt:
        print()
        return 130
    show_saved_messages(info or {})
    try:
        while True:
            try:
                text = read_message(session)
            except EOFError:
                print()
                return 0
            if text is None or not text.strip():
                continue
            try:
                if text.startswith("/"):
                    if not session.command(text):
                        return 0
                else:
                    session.answer(text)
            except CLIError as exc:
                print(f"{exc}\n")
            except KeyboardInterrupt:      # a command (/load, /save ...) given up on
                print()
    finally:
        if keep_history:
            try:
                HISTORY_FILE.parent.mkdir(parents=True, exist_ok=True)
                rl.write_history_file(HISTORY_FILE)
            except OSError:
                pass
