"""Real storage endpoints on 127.0.0.1 for the storage, Ray and training tests.

- :class:`S3Server`: moto in server mode (a ``python -m moto.server`` subprocess, so its state
  is its own and it does not compete for this process's GIL).
- :class:`GCSServer`: the gcp-storage-emulator, in memory, as a subprocess.
- :class:`HTTPFileServer`: a threaded HTTP server for a local folder that answers byte ranges,
  for ``https://``-style reads through fsspec's HTTPFileSystem (plain http on 127.0.0.1).
- :class:`FaultProxy`: an HTTP-aware TCP proxy placed between a client and one of the servers
  above; it forwards requests unchanged, and at chosen request numbers resets the connection,
  cuts a response mid-body, answers 5xx, delays or holds a request.

Each starts with ``start()`` (or ``with``) and stops with ``stop()``; the pytest fixtures at
the end start one per test module. Test modules import the fixtures they use by name.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import pytest

logger = logging.getLogger(__name__)

__all__ = [
    "free_port",
    "wait_for_port",
    "S3Server",
    "GCSServer",
    "HTTPFileServer",
    "Fault",
    "FaultProxy",
    "s3_server",
    "gcs_server",
    "unique_name",
    "CONVERT_KW",
    "tree_bytes",
    "assert_same_conversion",
]

# gcsfs >= 2025.x otherwise asks the Storage Control gRPC API for each bucket's layout, which
# an emulator does not serve (60 s timeout per bucket); children inherit the setting.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

HOST = "127.0.0.1"
ACCESS_KEY = "clipshards-test-key"
SECRET_KEY = "clipshards-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: Optional[subprocess.Popen] = None, timeout: float = 60.0) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")


def unique_name(prefix: str = "b") -> str:
    """A bucket name valid for S3 and GCS, unique in this session."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class _Managed:
    """``start()`` / ``stop()``, also as a context manager."""

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Subprocess(_Managed):
    """A server run as a child process listening on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "_Subprocess":
        self.port = free_port()
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class S3Server(_Subprocess):
    """moto in server mode. ``storage_options(endpoint)`` point s3fs at it (or at a proxy)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def storage_options(self, endpoint: Optional[str] = None, **extra: Any) -> dict[str, Any]:
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": endpoint or self.endpoint, "region_name": REGION},
            **extra,
        }

    def env(self, endpoint: Optional[str] = None) -> dict[str, str]:
        """Environment variables that point boto-based clients (s3fs) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def make_bucket(self, name: Optional[str] = None) -> str:
        name = name or unique_name("s3")
        self.client().create_bucket(Bucket=name)
        return name


class GCSServer(_Subprocess):
    """gcp-storage-emulator, in memory. ``storage_options(endpoint)`` point gcsfs at it."""

    def command(self) -> list[str]:
        exe = shutil.which("gcp-storage-emulator")
        base = [exe] if exe else [sys.executable, "-m", "gcp_storage_emulator"]
        return [*base, "start", "--host", HOST, "--port", str(self.port), "--in-memory", "--quiet"]

    def start(self) -> "GCSServer":
        import fsspec
        import gcsfs.core

        # in case gcsfs was imported before this module set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
        for proto in ("gs", "gcs"):
            fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)
        super().start()
        return self

    def storage_options(self, endpoint: Optional[str] = None, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": endpoint or self.endpoint, "token": "anon", "project": "clipshards-test", **extra}

    def make_bucket(self, name: Optional[str] = None) -> str:
        import gcsfs

        name = name or unique_name("gs")
        fs = gcsfs.GCSFileSystem(**self.storage_options(), skip_instance_cache=True)
        fs.mkdir(name)
        return name


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges (``Range: bytes=a-b``, ``a-``, ``-n``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s", format % args)

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            return super().send_head()
        try:
            fh = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        st = os.fstat(fh.fileno())
        size = st.st_size
        start, end = 0, size - 1
        header = self.headers.get("Range")
        status = 200
        if header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                fh.close()
                self.send_error(416, "bad range")
                return None
            if m.group(1):
                start = int(m.group(1))
                end = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                fh.close()
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{st.st_mtime_ns:x}-{size:x}"')
        self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        fh.seek(start)
        self._remaining = end - start + 1
        return fh

    def copyfile(self, source, outputfile) -> None:
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0:
            chunk = source.read(min(1 << 16, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)
        self._remaining = None


class _QuietThreadingHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        logger.debug("http server: error serving %s", client_address, exc_info=True)


class HTTPFileServer(_Managed):
    """Serves ``directory`` at ``http://127.0.0.1:<port>/`` from a thread, with byte ranges."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "HTTPFileServer":
        directory = self.directory

        class Handler(_RangeHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=directory, **kwargs)

        self._server = _QuietThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-file-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- fault proxy --------------------------------------------------------------------------

ACTIONS = ("reset", "cut", "status", "delay", "stall", "hold")


@dataclass
class Fault:
    """What to do to the ``nth`` .. ``nth + times - 1`` requests that match (1-based).

    A request matches when its method equals ``method`` (if given) and its target (path and
    query) contains ``path`` (if given). Every fault counts the requests it matches; of those
    whose turn it is, the first in the proxy's list acts. Actions:

    - ``reset``: read the request, then drop the connection (TCP RST) without an answer.
    - ``cut``: forward it, send the response head and half of the body, then reset.
    - ``status``: answer ``status`` (a 5xx) without forwarding.
    - ``delay``: wait ``seconds``, then forward.
    - ``stall``: forward, send the head and half the body, wait ``seconds``, send the rest.
    - ``hold``: keep the request (never forwarded) until :meth:`FaultProxy.release`.
    """

    action: str
    nth: int = 1
    times: int = 1
    method: Optional[str] = None
    path: Optional[str] = None
    status: int = 503
    seconds: float = 0.0
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action={self.action!r}: must be one of {ACTIONS}")
        if self.nth < 1 or self.times < 1:
            raise ValueError(f"nth={self.nth}, times={self.times}: both must be >= 1")

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in target)


@dataclass
class ProxyRecord:
    method: str
    target: str
    action: str
    status: Optional[int] = None


class _Closed(Exception):
    pass


def _read_head(sock: socket.socket, buf: bytearray) -> Optional[bytes]:
    """Bytes up to and including the blank line that ends an HTTP head (None at EOF)."""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            head = bytes(buf[: i + 4])
            del buf[: i + 4]
            return head
        data = sock.recv(65536)
        if not data:
            if buf:
                raise _Closed("connection closed inside a head")
            return None
        buf += data


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            raise _Closed("connection closed inside a body")
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while True:
        i = buf.find(b"\r\n")
        if i >= 0:
            line = bytes(buf[: i + 2])
            del buf[: i + 2]
            return line
        data = sock.recv(65536)
        if not data:
            raise _Closed("connection closed inside a chunk header")
        buf += data


def _read_chunked(sock: socket.socket, buf: bytearray) -> bytes:
    """The raw bytes of a chunked body, chunk headers and trailer included."""
    out = bytearray()
    while True:
        line = _read_line(sock, buf)
        out += line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:
                trailer = _read_line(sock, buf)
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += _read_exact(sock, buf, size + 2)


def _parse_headers(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return lines[0], headers


def _header(headers: list[tuple[str, str]], name: str) -> Optional[str]:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _build_head(first: str, headers: list[tuple[str, str]]) -> bytes:
    return ("\r\n".join([first, *(f"{k}: {v}" for k, v in headers)]) + "\r\n\r\n").encode("latin-1")


def _read_body(sock: socket.socket, buf: bytearray, headers: list[tuple[str, str]], *, until_eof: bool) -> bytes:
    te = _header(headers, "transfer-encoding")
    if te and "chunked" in te.lower():
        return _read_chunked(sock, buf)
    length = _header(headers, "content-length")
    if length is not None:
        return _read_exact(sock, buf, int(length))
    if not until_eof:
        return b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    out = bytes(buf)
    buf.clear()
    return out


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy(_Managed):
    """An HTTP/1.1 proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    Requests pass unchanged (one upstream connection per request); the :class:`Fault` rules
    in ``faults`` decide which ones are disturbed. ``records`` lists every request seen, with
    the action taken, in arrival order.
    """

    def __init__(self, upstream: str, faults: Optional[list[Fault]] = None):
        m = re.fullmatch(r"http://([^:/]+):(\d+)/?", upstream)
        if not m:
            raise ValueError(f"upstream={upstream!r}: expected http://host:port")
        self.upstream = (m.group(1), int(m.group(2)))
        self.faults: list[Fault] = list(faults or [])
        self.records: list[ProxyRecord] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests being forwarded at the same time (read-ahead shows as > 1)."""

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.records.clear()
            self.max_in_flight = self.in_flight

    def fired(self, action: Optional[str] = None) -> list[ProxyRecord]:
        return [r for r in self.records if r.action != "pass" and (action is None or r.action == action)]

    def release(self) -> None:
        self._release.set()

    def start(self) -> "FaultProxy":
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(64)
        t = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping = True
        self._release.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
            self._listener = None

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping and listener is not None:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn", daemon=True).start()

    def _decide(self, method: str, target: str) -> Optional[Fault]:
        with self._lock:
            chosen = None
            for f in self.faults:
                if f.matches(method, target):
                    f.seen += 1
                    if chosen is None and f.nth <= f.seen < f.nth + f.times:
                        f.fired += 1
                        chosen = f
            return chosen

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._stopping:
                head = _read_head(client, buf)
                if head is None:
                    break
                first, headers = _parse_headers(head)
                method, target = first.split(" ")[:2]
                expect = _header(headers, "expect")
                if expect and expect.lower() == "100-continue":
                    headers = [(k, v) for k, v in headers if k.lower() != "expect"]
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(client, buf, headers, until_eof=False)
                fault = self._decide(method, target)
                record = ProxyRecord(method, target, fault.action if fault else "pass")
                with self._lock:
                    self.records.append(record)
                if fault is not None and fault.action == "reset":
                    _abort(client)
                    return
                if fault is not None and fault.action == "status":
                    record.status = fault.status
                    msg = f"injected {fault.status}".encode()
                    client.sendall(
                        f"HTTP/1.1 {fault.status} Injected Fault\r\nContent-Type: text/plain\r\n"
                        f"Content-Length: {len(msg)}\r\nConnection: close\r\n\r\n".encode() + msg
                    )
                    client.close()
                    return
                if fault is not None and fault.action == "hold":
                    self.held.set()
                    self._release.wait()
                    _abort(client)
                    return
                with self._lock:
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if fault is not None and fault.action == "delay":
                        time.sleep(fault.seconds)
                    keep = self._forward(client, method, _build_head(first, headers) + body, record, fault)
                finally:
                    with self._lock:
                        self.in_flight -= 1
                if not keep:
                    break
        except (_Closed, OSError, ValueError):
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass

    def _forward(self, client: socket.socket, method: str, request: bytes, record: ProxyRecord, fault: Optional[Fault]) -> bool:
        """Send one request upstream and relay its response; False when the connection must end."""
        with socket.create_connection(self.upstream, timeout=120) as up:
            up.sendall(request)
            ubuf = bytearray()
            while True:
                rhead = _read_head(up, ubuf)
                if rhead is None:
                    raise _Closed("upstream closed without a response")
                status_line, rheaders = _parse_headers(rhead)
                status = int(status_line.split(" ")[1])
                if status != 100:
                    break
            record.status = status
            no_body = method == "HEAD" or status in (204, 304)
            body = b"" if no_body else _read_body(up, ubuf, rheaders, until_eof=True)
        framed = _header(rheaders, "content-length") is not None or "chunked" in (_header(rheaders, "transfer-encoding") or "").lower()
        if fault is not None and fault.action in ("cut", "stall") and body:
            half = len(body) // 2
            client.sendall(rhead + body[:half])
            if fault.action == "cut":
                _abort(client)
                return False
            time.sleep(fault.seconds)
            client.sendall(body[half:])
        else:
            client.sendall(rhead + body)
        conn = (_header(rheaders, "connection") or "").lower()
        return (framed or no_body) and conn != "close"


# -- comparing conversions ----------------------------------------------------------------

CONVERT_KW = dict(frames_per_clip=8, step_between_clips=4, layout="clips", progress=False, shard_size=200_000)
"""The options of ``tiny_converted`` (tests/conftest.py), minus ``workers``."""

_RUN_ONLY_REPORT_FIELDS = ("out", "seconds", "resumed_shards")


def tree_bytes(url: str | os.PathLike, storage_options: Optional[dict[str, Any]] = None) -> dict[str, bytes]:
    """Every file under ``url`` (a folder or an fsspec URL): ``relative path -> bytes``."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(os.fspath(url), **(storage_options or {}))
    fs.invalidate_cache()
    root = root.rstrip("/")
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(root))}


def assert_same_conversion(expected: dict[str, bytes], actual: dict[str, bytes]) -> None:
    """Same files with the same bytes; in ``report.json`` only the run's own facts may differ
    (where it was written, how long it took, how much was resumed)."""
    import json

    assert sorted(actual) == sorted(expected)
    differ = [n for n in expected if not n.endswith("report.json") and actual[n] != expected[n]]
    assert not differ, f"files differ: {differ}"
    for name in expected:
        if name.endswith("report.json"):
            a, b = json.loads(expected[name]), json.loads(actual[name])
            for k in _RUN_ONLY_REPORT_FIELDS:
                a.pop(k, None)
                b.pop(k, None)
            assert a == b, f"{name} differs"


# -- pytest fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server for this test module."""
    logging.getLogger("botocore").setLevel(logging.WARNING)
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def gcs_server():
    """A gcp-storage-emulator for this test module."""
    with GCSServer() as server:
        yield server
