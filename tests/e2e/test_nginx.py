"""Nginx in front of the server, with the configuration docs/nginx.md documents: a streamed
answer arrives line by line through it."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.conftest import MODEL, start

pytestmark = pytest.mark.full  # runs Nginx in front of the server

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_server_block() -> str:
    text = (ROOT / "docs" / "nginx.md").read_text()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is installed by scripts/test.sh")
async def test_a_streamed_answer_arrives_line_by_line_through_nginx(
        nursery: trio.Nursery, models_dir: Path, tmp_path: Path) -> None:
    host, _ = await start(nursery, models_dir)
    port = free_port()
    server_block = documented_server_block().replace(
        "127.0.0.1:11434", f"127.0.0.1:{host.port}").replace("8080", str(port))
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "daemon off;\nworker_processes 1;\npid nginx.pid;\nerror_log logs/error.log;\n"
        "events {}\nhttp {\naccess_log off;\nclient_body_temp_path tmp;\n"
        "proxy_temp_path tmp;\n" + server_block + "}\n")
    (tmp_path / "tmp").mkdir()
    proxy = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            with trio.fail_after(20):
                while True:
                    try:
                        if (await client.get("/")).status_code == 200:
                            break
                    except httpx.TransportError:
                        assert proxy.poll() is None, proxy.stderr.read().decode()
                    await trio.sleep(0.1)
            body = {"model": MODEL, "prompt": "Write a long poem about the sea.",
                    "options": {"num_predict": 40, "temperature": 0}}
            arrivals: list[float] = []
            async with client.stream("POST", "/api/generate", json=body) as reply:
                assert reply.status_code == 200
                async for line in reply.aiter_lines():
                    if line:
                        arrivals.append(trio.current_time())
            assert len(arrivals) > 10
            # line by line: the first line came well before the last, not all in one burst
            assert arrivals[-1] - arrivals[0] > 0.05
            assert arrivals[len(arrivals) // 2] - arrivals[0] > 0.02
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
