"""Real loopback servers for tests (no mocks): an HTTP file server with Range support, and S3.

Both bind 127.0.0.1 on a free port chosen by the OS (port 0), so parallel runs never collide.

Fixtures (register this module as a pytest plugin, see below):

- ``http_server``: a threaded HTTP/1.1 server serving in-memory files (``.files``), with
  ``Range``/``If-Range``/``ETag``, a recording of every request (``.requests``) and switches for
  failures: ``cut_after`` (close the connection after N body bytes, first request only),
  ``ignore_range`` (answer 200 to range requests), ``fail_first`` (answer 503 N times),
  ``status`` (a fixed status such as 403).
- ``moto_server``: one moto ``ThreadedMotoServer`` for the whole session.
- ``s3_server``: per test: moto state reset, fake credentials in the environment (``testing``,
  region us-east-1, no profile or config file), and helpers ``client()``, ``filesystem()``,
  ``create_bucket()`` and ``put()``.

Register in tests/conftest.py with ``pytest_plugins = ["tests.servers"]`` (the repository root
must be importable: run ``python -m pytest``, or add ``pythonpath = ["."]`` to
``[tool.pytest.ini_options]``). A test module may also list it in its own ``pytest_plugins``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on at the moment of asking (the OS picked it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    """State and switches of the loopback HTTP file server (mutate them from the test)."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    fail_first: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def requests_for(self, path: str) -> list[RecordedRequest]:
        path = "/" + path.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _plain(self, code: int, text: str = "") -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            key = path.lstrip("/")
            with state._lock:
                state.requests.append(RecordedRequest(self.command, path, dict(self.headers)))
                first = len([r for r in state.requests if r.path == path]) == 1
                failing = state.fail_first.get(key, 0)
                if failing:
                    state.fail_first[key] = failing - 1
            if key in state.status:
                return self._plain(state.status[key], "forced status")
            if failing:
                return self._plain(503, "try again")
            data = state.files.get(key)
            if data is None:
                return self._plain(404, "not found")

            etag = state.etag(data)
            start, end, code = 0, len(data) - 1, 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and key not in state.ignore_range and (not if_range or if_range == etag):
                match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = min(int(match.group(2) or end), end)
                    else:  # suffix range: the last N bytes
                        start = max(len(data) - int(match.group(2)), 0)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    code = 206
            chunk = data[start : end + 1]
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not body:
                return None
            limit = state.cut_after.get(key)
            if limit is not None and first and limit < len(chunk):
                self.wfile.write(chunk[:limit])
                self.wfile.flush()
                self.close_connection = True  # the client sees a short body
                return None
            self.wfile.write(chunk)
            return None

    return Handler


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A threaded HTTP file server on 127.0.0.1 (free port), torn down after the test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a host proxy must not intercept
    state = FileServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    state.base_url = f"http://{host}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="test-http", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class S3Server:
    """A moto S3 endpoint on 127.0.0.1 with helpers for arranging buckets."""

    endpoint_url: str

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint_url, skip_instance_cache=True)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset endpoint)."""
        import requests

        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """One moto S3 server for the session (starting one takes about a second)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_server(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's moto server, emptied, with fake credentials in the environment."""
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    moto_server.reset()
    return moto_server
