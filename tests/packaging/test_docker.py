"""The Docker image: the repository's Dockerfile, built for real on a local Debian base, serves
smollm2:135m from a mounted store and answers through the published port.

No image can be pulled here, so the base is made with debootstrap and `docker import`, then
kept (reruns on the same machine reuse it). The daemon is started when none runs (needs root).
TRIO_LLM_SKIP_DOCKER=1 skips this test on a developer's machine; anywhere else it fails
loudly when Docker cannot be set up, so CI really runs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trio_llm.store.progress import drain
from trio_llm.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2:135m"
BASE_IMAGE = "trio-llm-test-base:bookworm"
IMAGE = "trio-llm-test"
LOCK = Path(tempfile.gettempdir()) / "trio-llm-docker-test.lock"
DOCKERD_LOG = Path(tempfile.gettempdir()) / "trio-llm-dockerd.log"

pytestmark = [pytest.mark.full,  # builds and runs the Docker image
              pytest.mark.skipif(os.environ.get("TRIO_LLM_SKIP_DOCKER") == "1",
                                 reason="TRIO_LLM_SKIP_DOCKER=1")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, timeout: float = 60, what: str = "") -> str:
    """Run a command; its stdout, or a test failure that shows the end of its output."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        pytest.fail(f"{args[0]} is not installed (scripts/test.sh installs docker.io and "
                    "debootstrap with apt-get)")
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what or args[0]} took over {timeout:.0f} s")
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        pytest.fail(f"{what or ' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ensure_daemon() -> None:
    """Start dockerd in the background when no daemon answers; it stays up for later runs."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        pytest.fail("docker is not installed: apt-get install docker.io (scripts/test.sh does)")
    if docker_answers():
        return
    if os.geteuid() != 0:
        pytest.fail("no Docker daemon answers and starting dockerd needs root "
                    "(set TRIO_LLM_SKIP_DOCKER=1 to skip this test)")
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not docker_answers():
        if time.monotonic() > deadline:
            tail = DOCKERD_LOG.read_text(errors="replace")[-3000:]
            pytest.fail(f"dockerd did not come up within 60 s; {DOCKERD_LOG}:\n{tail}")
        time.sleep(1)


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name],
                          capture_output=True).returncode == 0


def ensure_base_image() -> None:
    """A bookworm image with python3 and venv, trusting this machine's CA bundle (built once)."""
    if image_exists(BASE_IMAGE):
        return
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed: apt-get install debootstrap "
                    "(scripts/test.sh does)")
    with tempfile.TemporaryDirectory(prefix="trio-llm-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run("debootstrap", "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates", "bookworm", str(rootfs),
            timeout=900, what="debootstrap of the base image")
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():  # pip inside image builds then trusts what pip here trusts
            shutil.copyfile(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=600)
        tar.stdout.close()  # type: ignore[union-attr]
        if tar.wait() != 0 or imported.returncode != 0:
            pytest.fail(f"docker import of the base image failed:\n{imported.stderr[-3000:]}")


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from the repository's Dockerfile on the local base."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs share the daemon and the base image
        ensure_daemon()
        ensure_base_image()
        run("docker", "build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}",
            "-t", IMAGE, str(ROOT), timeout=1200, what="docker build")
    return IMAGE


def get(url: str, body: dict[str, object] | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def test_the_image_reports_its_version(image: str) -> None:
    out = run("docker", "run", "--rm", image, "--version")
    assert out.startswith("trio-llm ")


def test_the_image_serves_a_mounted_store_on_its_published_port(
        image: str, tmp_path: Path, smollm2_path: Path) -> None:
    store = tmp_path / "models"
    drain(Store(store).pull(MODEL, source=smollm2_path))
    port = free_port()
    container = run("docker", "run", "-d", "-p", f"127.0.0.1:{port}:11434",
                    "-v", f"{store}:/root/.ollama/models", image).strip()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except (OSError, urllib.error.URLError):
                running = run("docker", "inspect", "-f", "{{.State.Running}}", container)
                logs = subprocess.run(["docker", "logs", container], capture_output=True,
                                      text=True).stderr[-3000:]
                assert running.strip() == "true", f"the container exited:\n{logs}"
                assert time.monotonic() < deadline, f"the server did not answer GET /:\n{logs}"
                time.sleep(0.5)
        names = [m["name"] for m in get(f"{url}/api/tags")["models"]]
        assert MODEL in names
        reply = get(f"{url}/api/generate", {  # raw: a plain completion, no chat template
            "model": MODEL, "prompt": "The capital of France is", "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 5}}, timeout=120)
        assert reply["done"]
        assert reply["response"].startswith(" Paris"), reply["response"]
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True)
