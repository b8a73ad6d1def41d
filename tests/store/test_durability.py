"""A store survives processes: another process reads what this one wrote, a kill -9 in the
middle of an import leaves nothing half-written visible (and the next open cleans up), and
threads sharing one Store never leave a manifest pointing at a missing blob."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from trio_llm.store import ModelNotFound, Store, drain

REPO = Path(__file__).resolve().parents[2]

READ_BACK = """
import json, sys
from trio_llm.store import Store
store = Store(sys.argv[1], prune=False)
print(json.dumps({"list": [e.to_json() for e in store.list()],
                  "show": store.show("smollm2:135m").to_json()}))
"""

IMPORT_AND_HANG = """
import sys, time
import trio_llm.store.catalog as catalog
from trio_llm.store import Store
from trio_llm.store.progress import Throttle
catalog.Throttle = lambda: Throttle(0.0)       # report every chunk, so we stop mid-blob
store = Store(sys.argv[1])
for report in store.pull("smollm2:135m", source=sys.argv[2]):
    if 0 < report.get("completed", 0) < report.get("total", 0):
        print("WRITING", flush=True)
        time.sleep(600)                        # the blob is half-written; wait to be killed
"""


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            **kwargs)


def test_a_fresh_process_reads_back_the_same_store(smol_store: Store) -> None:
    drain(smol_store.create({"model": "second", "from": "smollm2:135m", "system": "S"}))
    proc = run_python(READ_BACK, str(smol_store.root))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    seen = json.loads(out)
    assert seen["list"] == [e.to_json() for e in smol_store.list()]
    assert seen["show"] == smol_store.show("smollm2:135m").to_json()


def test_kill_9_during_an_import_leaves_no_partial_blob_or_manifest(
        tmp_path: Path, smollm2_path: Path) -> None:
    root = tmp_path / "models"
    proc = run_python(IMPORT_AND_HANG, str(root), str(smollm2_path))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "WRITING\n"
        temporaries = list((root / "blobs").glob(".tmp-*"))
        assert len(temporaries) == 1 and 0 < temporaries[0].stat().st_size < 98_362_432
        assert not list((root / "blobs").glob("sha256-*"))
        Store(root)                                   # a live writer's temporary is kept
        assert temporaries[0].exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not list((root / "blobs").glob("sha256-*"))
    assert not [p for p in (root / "manifests").rglob("*") if p.is_file()]
    store = Store(root)                               # the next open cleans the temporary
    assert os.listdir(root / "blobs") == [] and store.list() == []
    with pytest.raises(ModelNotFound):
        store.get("smollm2:135m")
    drain(store.pull("smollm2:135m", source=smollm2_path))   # and the import can be redone
    assert store.blobs.verify(store.get("smollm2:135m").model_digest)


def test_threads_creating_and_deleting_never_strand_a_manifest(smol_store: Store) -> None:
    errors: list[Exception] = []

    def churn(tag: str) -> None:
        try:
            for i in range(6):
                name = f"t{tag}:{i}"
                drain(smol_store.create({"model": name, "from": "smollm2:135m",
                                         "system": f"shared {i % 2}"}))
                smol_store.copy(name, f"c{tag}:{i}")
                smol_store.delete(name)
        except Exception as exc:   # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(str(n),)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = {e.name.display for e in smol_store.list()}
    assert names == {"smollm2:135m"} | {f"c{n}:{i}" for n in range(3) for i in range(6)}
    for entry in smol_store.list():
        for digest in smol_store.get(entry.name.display).manifest.digests:
            assert smol_store.has_blob(digest)
    for name in names - {"smollm2:135m"}:
        smol_store.delete(name)
    base = smol_store.get("smollm2:135m").manifest.digests
    assert {"sha256:" + p[7:] for p in os.listdir(smol_store.root / "blobs")} == base


def test_a_delete_in_the_middle_of_a_create_spares_the_blobs_it_will_use(
        smol_store: Store) -> None:
    drain(smol_store.create({"model": "old", "from": "smollm2:135m", "system": "shared"}))
    system_digest = smol_store.get("old").manifest.layers_of(
        "application/vnd.ollama.image.system")[0].digest
    creating = smol_store.create({"model": "new", "from": "smollm2:135m", "system": "shared"})
    for report in creating:   # run the create until it has claimed the existing system blob
        if report["status"] == f"using existing layer {system_digest}":
            break
    smol_store.delete("old")  # "old" was the blob's only user so far
    assert smol_store.has_blob(system_digest)
    drain(creating)
    assert smol_store.get("new").system == "shared"
