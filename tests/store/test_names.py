"""Model names and digests: Ollama's defaults and display, and refusal of anything that could
reach outside the store, before the file system is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.conftest import tree
from trio_llm.store import (
    InvalidDigest,
    InvalidName,
    InvalidRequest,
    Store,
    drain,
    parse_digest,
    parse_name,
)

HOSTILE = [
    "../../etc/passwd", "a/../../b", "/abs", "x:y:z", "m" * 300, "a\0b", "a\\b", "", "..",
    ".", "./x", "x/./y", "x/", "/", "a//b", "-x", ".hidden", "ns.dot/model", "a/b/c/d",
    "model:../../x", "model:", ":tag", "mod el", "mod\nel", "modèle", "x" * 81, "h/n/m:" + "t" * 81,
    "~/x", "%2e%2e/x", "a:b/c",
]


def test_defaults_fill_in_host_namespace_and_tag() -> None:
    name = parse_name("smollm2")
    assert name.parts == ("registry.ollama.ai", "library", "smollm2", "latest")
    assert name.display == "smollm2:latest"
    assert name.full == "registry.ollama.ai/library/smollm2:latest"


def test_display_drops_only_default_parts() -> None:
    assert parse_name("mattw/pyg").display == "mattw/pyg:latest"
    assert parse_name("registry.ollama.ai/library/llama3.2:3b").display == "llama3.2:3b"
    assert parse_name("example.com:5000/ns/m:v1").display == "example.com:5000/ns/m:v1"


def test_tag_splits_only_after_the_last_slash() -> None:
    name = parse_name("localhost:5000/ns/m")
    assert (name.host, name.tag) == ("localhost:5000", "latest")
    assert parse_name("https://example.com/ns/m:v2").parts == ("example.com", "ns", "m", "v2")


def test_names_compare_case_insensitively() -> None:
    assert parse_name("SmolLM2:135M").key == parse_name("smollm2:135m").key
    assert parse_name("SmolLM2:135M").display == "SmolLM2:135M"   # spelling is kept


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_names_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidName) as err:
        parse_name(bad)
    assert str(err.value) == "invalid model name"


def test_hostile_names_never_touch_the_file_system(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    before = tree(tmp_path)
    operations = [
        lambda n: store.get(n), lambda n: store.show(n), lambda n: store.delete(n),
        lambda n: store.exists(n), lambda n: store.resolve(n), lambda n: store.capabilities(n),
        lambda n: store.copy(n, "ok"), lambda n: store.copy("ok", n),
        lambda n: drain(store.pull(n)),
        lambda n: drain(store.create({"model": n, "from": "smollm2"})),
        lambda n: drain(store.create({"model": "ok", "from": n})),
        lambda n: drain(store.create_from_modelfile(n, "FROM smollm2")),
    ]
    for bad in HOSTILE:
        for op in operations:
            # an empty name in a JSON body is "model is required"; still a 400, still no I/O
            with pytest.raises(InvalidRequest if bad == "" else InvalidName):
                op(bad)
    assert tree(tmp_path) == before


def test_copy_names_the_invalid_side(store: Store) -> None:
    with pytest.raises(InvalidName, match='source "../x" is invalid'):
        store.copy("../x", "ok")
    with pytest.raises(InvalidName, match='destination "a/../b" is invalid'):
        store.copy("ok", "a/../b")


@pytest.mark.parametrize("text", ["sha256:" + "ab" * 32, "sha256-" + "AB" * 32])
def test_digests_accept_both_separators_and_normalise(text: str) -> None:
    assert parse_digest(text) == "sha256:" + "ab" * 32


@pytest.mark.parametrize("bad", ["sha256:" + "a" * 63, "sha512:" + "a" * 64, "a" * 64,
                                 "sha256:" + "g" * 64, "sha256:../../etc/passwd", "",
                                 "sha256:" + "a" * 64 + "/x"])
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDigest, match="invalid digest format"):
        parse_digest(bad)
