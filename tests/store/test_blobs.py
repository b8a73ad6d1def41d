"""Blobs appear only whole and verified; temporaries of dead writers are cleaned, live ones
kept; unreferenced blobs are pruned at start unless OLLAMA_NOPRUNE."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest

from trio_llm.store import BlobNotFound, CorruptStore, DigestMismatch, Layer, Manifest, Store
from trio_llm.store.atomic import TempFile
from trio_llm.store.manifests import CONFIG, MODEL
from trio_llm.store.names import parse_name
from trio_llm.store.progress import drain


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_blob_is_stored_under_its_sha256_with_a_dash(store: Store) -> None:
    digest, size = store.blobs.write_bytes(b"hello")
    assert (digest, size) == (digest_of(b"hello"), 5)
    path = store.root / "blobs" / ("sha256-" + digest[7:])
    assert path.read_bytes() == b"hello"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert store.blob_path(digest) == path and store.has_blob(digest)


def test_bytes_that_miss_their_digest_leave_nothing_behind(store: Store) -> None:
    wanted = digest_of(b"expected")
    with pytest.raises(DigestMismatch) as err:
        drain(store.write_blob(io.BytesIO(b"something else"), wanted))
    got = digest_of(b"something else")
    assert str(err.value) == f'digest mismatch, expected "{wanted}", got "{got}"'
    assert os.listdir(store.root / "blobs") == []


def test_upload_streams_report_progress_and_return_the_digest(store: Store) -> None:
    data = os.urandom(9 << 20)
    reports = []
    digest = drain(store.write_blob(io.BytesIO(data), digest_of(data)), reports.append)
    assert digest == digest_of(data) and store.blobs.verify(digest)
    assert reports[-1]["completed"] == len(data)


def test_writing_the_same_blob_twice_is_harmless(store: Store) -> None:
    assert store.blobs.write_bytes(b"x") == store.blobs.write_bytes(b"x")
    assert len(os.listdir(store.root / "blobs")) == 1


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "models"
    Store(root)
    dead = root / "blobs" / ".tmp-dead"
    dead.write_bytes(b"partial")
    nested = root / "manifests" / "registry.ollama.ai" / "library" / "m"
    nested.mkdir(parents=True)
    (nested / ".tmp-abc").write_bytes(b"{")
    live = TempFile(root / "blobs")
    live.write(b"still writing")
    try:
        Store(root)
        assert not dead.exists() and live.path.exists()
        assert not (root / "manifests" / "registry.ollama.ai").exists()   # emptied, removed
    finally:
        live.abort()


def test_legacy_colon_blob_names_are_renamed(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "blobs").mkdir(parents=True)
    digest = digest_of(b"old")
    (root / "blobs" / digest.replace("sha256-", "sha256:")).write_bytes(b"old")
    store = Store(root, prune=False)
    assert store.has_blob(digest) and os.listdir(root / "blobs") == ["sha256-" + digest[7:]]


def _manifest_for(store: Store, payload: bytes) -> Manifest:
    model, size = store.blobs.write_bytes(payload)
    config, csize = store.blobs.write_bytes(b"{}")
    return Manifest(Layer(CONFIG, config, csize), (Layer(MODEL, model, size),))


def test_a_manifest_is_refused_until_its_blobs_are_in_place(store: Store) -> None:
    manifest = _manifest_for(store, b"weights")
    store.blobs.remove(manifest.layers[0].digest)
    with pytest.raises(CorruptStore, match="missing"):
        store.write_manifest(parse_name("m"), manifest)
    assert not store.exists("m")


def test_start_prunes_old_unreferenced_blobs_only(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    store = Store(root)
    store.write_manifest(parse_name("kept"), _manifest_for(store, b"referenced"))
    orphan_old, _ = store.blobs.write_bytes(b"orphan, old")
    orphan_new, _ = store.blobs.write_bytes(b"orphan, new")
    hour_ago = time.time() - 3700
    for digest in (orphan_old, *store.get("kept").manifest.digests):
        os.utime(store.blob_path(digest), (hour_ago, hour_ago))
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    Store(root)
    assert store.has_blob(orphan_old)
    monkeypatch.setenv("OLLAMA_NOPRUNE", "false")
    Store(root)
    assert not store.has_blob(orphan_old) and store.has_blob(orphan_new)
    assert all(store.has_blob(d) for d in store.get("kept").manifest.digests)


def test_missing_blobs_are_reported_by_digest(store: Store) -> None:
    with pytest.raises(BlobNotFound, match='blob "sha256:0{64}" not found'):
        store.blobs.size("sha256:" + "0" * 64)


def test_a_manifest_we_cannot_parse_still_protects_its_blobs(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = Store(root)
    digest, _ = store.blobs.write_bytes(b"weights of a future format")
    future = root / "manifests" / "registry.ollama.ai" / "library" / "future" / "latest"
    future.parent.mkdir(parents=True)
    future.write_text(json.dumps({"schemaVersion": 3, "blobs": [digest]}))
    old = time.time() - 7200
    os.utime(store.blob_path(digest), (old, old))
    Store(root)
    assert store.has_blob(digest) and store.list() == []


def test_delete_also_prunes_old_orphans_but_spares_fresh_uploads(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    store.write_manifest(parse_name("doomed"), _manifest_for(store, b"doomed weights"))
    old_orphan, _ = store.blobs.write_bytes(b"left over by a crash long ago")
    fresh_upload, _ = store.blobs.write_bytes(b"uploaded for a create a moment ago")
    hour_ago = time.time() - 3700
    os.utime(store.blob_path(old_orphan), (hour_ago, hour_ago))
    store.delete("doomed")
    assert store.blobs.digests() == {fresh_upload}
