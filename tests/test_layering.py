"""Imports flow one way: every module of trio_llm/ is read (function-level imports included) and
each import across packages is checked against the forbidden arrows, each with its reason."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trio_llm"


@dataclass(frozen=True)
class Arrow:
    """An import from package `source` into any of `targets` that the design forbids."""

    source: str
    targets: tuple[str, ...]
    reason: str


FORBIDDEN = (
    Arrow("cli", ("engine", "nursery", "store", "arch"),
          "the CLI talks to the server over HTTP only"),
    Arrow("cli", ("testing",), "a shipped command never depends on test helpers"),
    Arrow("nursery", ("api",), "the scheduler knows no HTTP"),
    Arrow("engine", ("nursery",), "the engine runs a model; it never schedules"),
    Arrow("engine", ("api",), "the engine knows no HTTP"),
    Arrow("store", ("nursery",), "the store keeps models; it does not schedule"),
    Arrow("arch", ("nursery", "api"), "an architecture is math over weights: no scheduling, "
                                      "no HTTP"),
)

# Leaves every part may import (the file formats, the option table); they import nothing from
# trio_llm but these.
LEAVES = ("formats", "options")
LEAF_MAY_IMPORT = ("errors", "config", "options")


@dataclass(frozen=True)
class Import:
    module: str     # the importing module, dotted
    target: str     # the imported module, dotted
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Import]:
    """Every trio_llm module `path` imports, wherever the import statement sits."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path),
                      is_package=path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> list[Import]:
    """The trio_llm imports of `source`, the text of `module`; relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from trio_llm import engine` imports trio_llm.engine
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [Import(module, t, node.lineno) for t in targets
                  if t == "trio_llm" or t.startswith("trio_llm.")]
    return found


def part(dotted: str) -> str:
    """The package under trio_llm a module belongs to (`trio_llm.cli.verbs` -> `cli`)."""
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def violations(imports: list[Import]) -> list[str]:
    """One line per import statement that crosses a forbidden arrow, saying why."""
    out = []
    seen = set()
    for imp in imports:
        source, target = part(imp.module), part(imp.target)
        if source == target or (imp.module, imp.line, target) in seen:
            continue
        seen.add((imp.module, imp.line, target))
        for arrow in FORBIDDEN:
            if source == arrow.source and target in arrow.targets:
                out.append(f"{imp.module}:{imp.line} imports {imp.target}: {arrow.source} -> "
                           f"{target} is forbidden ({arrow.reason})")
        if source in LEAVES and target and target not in (*LEAF_MAY_IMPORT, *LEAVES):
            out.append(f"{imp.module}:{imp.line} imports {imp.target}: {source} is a leaf that "
                       f"the store, the engine and the CLI share, so it imports only "
                       f"{', '.join(LEAF_MAY_IMPORT)}")
    return out


def test_no_module_imports_across_a_forbidden_arrow():
    found = violations(all_imports())
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_walk_sees_function_level_relative_and_from_package_imports():
    source = ("def later():\n    from ..engine import model\n    import trio_llm.nursery\n"
              "from trio_llm import store\nfrom trio_llm.cli import client\n")
    found = violations(imports_in(source, "trio_llm.cli.probe"))
    assert [line.split(" imports ")[1].split(":")[0] for line in found] == [
        "trio_llm.store", "trio_llm.engine", "trio_llm.nursery"]
    assert all("(the CLI talks to the server over HTTP only)" in line for line in found)


def test_a_leaf_importing_the_engine_is_named():
    found = violations(imports_in("from trio_llm.engine import kernels\n"
                                  "from trio_llm.errors import BadRequest\n",
                                  "trio_llm.formats.probe"))
    assert len(found) == 1 and "formats is a leaf" in found[0]


@pytest.mark.parametrize("arrow", FORBIDDEN, ids=lambda a: f"{a.source}-not-{'-'.join(a.targets)}")
def test_each_arrow_names_packages_that_exist(arrow: Arrow):
    assert (PACKAGE / arrow.source).is_dir()
    assert all((PACKAGE / target).is_dir() for target in arrow.targets)
