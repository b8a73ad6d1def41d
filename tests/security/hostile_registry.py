"""A registry that misbehaves on purpose, on a loopback port: the attacker's side of the pull
tests. It speaks just enough of the registry API v2 (manifests and blobs, one request per
connection) and picks its misbehaviour from the repository name:

- `slow/<m>`: blobs arrive one byte every `interval` seconds (slowloris)
- `silent/<m>`: blob headers, then nothing at all
- `ftp/<m>`: blob requests are redirected to ftp://
- `layers<N>/<m>`: a manifest of N small layers, each served at once
- `silentpush/<m>`: takes a push's upload, reads its first chunk and never answers
- anything else: one small layer, served at once

It counts the blob connections open now, and the file descriptors of the process at each
blob request (the server under test runs in the same process)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import trio

CONFIG = b'{"model_format":"gguf","model_family":"llama"}'


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes(i: int) -> bytes:
    return f"layer {i} ".encode() * 4


@dataclass
class HostileRegistry:
    interval: float = 1.0
    open_blob_connections: int = 0
    blob_requests: int = 0
    max_fds: int = 0
    port: int = 0
    blobs: dict[str, bytes] = field(default_factory=dict)

    def manifest(self, namespace: str) -> bytes:
        count = int(namespace[len("layers"):]) if namespace.startswith("layers") else 1
        config = {"mediaType": "application/vnd.docker.container.image.v1+json",
                  "digest": digest(CONFIG), "size": len(CONFIG)}
        self.blobs[digest(CONFIG)] = CONFIG
        layers = []
        for i in range(count):
            data = layer_bytes(i)
            self.blobs[digest(data)] = data
            layers.append({"mediaType": "application/vnd.ollama.image.license",
                           "digest": digest(data), "size": len(data)})
        return json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": config, "layers": layers}).encode()

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            parts = path.split("/")          # /v2/<ns>/<model>/<kind>/<ref>
            namespace, kind, ref = parts[2], parts[4], parts[5]
            if namespace == "silentpush":
                await self.silent_push(stream, method)
            elif kind == "manifests":
                await self.reply(stream, 200, self.manifest(namespace),
                                 "application/vnd.docker.distribution.manifest.v2+json")
            elif kind == "blobs":
                await self.blob(stream, namespace, ref, method)
            else:
                await self.reply(stream, 404, b"{}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError, IndexError):
            pass
        finally:
            await stream.aclose()

    async def blob(self, stream: trio.SocketStream, namespace: str, ref: str,
                   method: str) -> None:
        self.blob_requests += 1
        self.max_fds = max(self.max_fds, len(os.listdir("/proc/self/fd")))
        data = self.blobs.get(ref, b"")
        if namespace == "ftp":
            await stream.send_all(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                                  b"ftp://127.0.0.1/blob\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")
            return
        if namespace not in ("slow", "silent") or ref == digest(CONFIG):
            await self.reply(stream, 200, data, "application/octet-stream")
            return
        self.open_blob_connections += 1
        try:
            await stream.send_all(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n"
                                  "Content-Type: application/octet-stream\r\n"
                                  "Connection: close\r\n\r\n".encode())
            if namespace == "silent":
                await trio.sleep_forever()
            for byte in data:
                await trio.sleep(self.interval)
                await stream.send_all(bytes([byte]))
        finally:
            self.open_blob_connections -= 1

    async def silent_push(self, stream: trio.SocketStream, method: str) -> None:
        if method == "HEAD":
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")
        elif method == "POST":
            await stream.send_all(b"HTTP/1.1 202 Accepted\r\nLocation: /v2/silentpush/m/blobs/"
                                  b"uploads/1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:           # take the chunk, never answer; notice when the pusher hangs up
            self.open_blob_connections += 1
            try:
                while await stream.receive_some(1 << 16):
                    pass
            finally:
                self.open_blob_connections -= 1

    @staticmethod
    async def reply(stream: trio.SocketStream, status: int, body: bytes,
                    content_type: str = "application/json") -> None:
        await stream.send_all(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                              f"Content-Type: {content_type}\r\n"
                              f"Docker-Content-Digest: {digest(body)}\r\n"
                              "Connection: close\r\n\r\n".encode() + body)

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self.handle, listeners)
            task_status.started(self.port)
