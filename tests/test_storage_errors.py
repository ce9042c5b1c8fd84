"""Storage errors a user can act on (issue 14): no credentials, a refused request (401/403) and a
dead endpoint give one line naming the URL and the fix, at once or within ``connect_timeout``,
from the converter (status 1, no traceback) and the loaders; none of them is retried.

Every endpoint is on 127.0.0.1: moto (tests/servers.py), a server that refuses everything, a
closed port, and a port whose connection queue is full (a connect that never completes)."""

from __future__ import annotations

import http.server
import os
import pickle
import socket
import subprocess
import sys
import threading
import time

import pytest
from fsspec.core import url_to_fs

from clipshards.convert import convert
from clipshards.convert.storage_errors import (
    CREDENTIALS,
    DENIED,
    NO_BUCKET,
    UNREACHABLE,
    StorageError,
    classify,
    connect_timeout_from_env,
)
from clipshards.loader import IndexedKinetics, StorageError as LoaderStorageError, StreamingKinetics, TransportOptions
from clipshards.loader.retry import TransportError, retrying
from servers import HOST, free_port, s3_server  # noqa: F401 - s3_server is a fixture

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")
FAST = TransportOptions(retries=5, backoff=0.01, max_backoff=0.02)


def _no_aws_environment(tmp_path) -> dict[str, str]:
    """The environment with no AWS credentials anywhere, and no instance-metadata lookup (which
    would leave 127.0.0.1)."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"), AWS_CONFIG_FILE=str(tmp_path / "no-config"),
               AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    return env


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    env = _no_aws_environment(tmp_path)
    for k in AWS_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    for k in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(k, env[k])
    return env


@pytest.fixture(scope="module")
def s3_shards(s3_server, tiny_converted):  # noqa: F811 - the fixture imported above
    """``tiny_converted`` uploaded to a moto bucket: ``s3://<bucket>/k`` (train split only)."""
    url = f"s3://{s3_server.make_bucket()}/k"
    fs, root = url_to_fs(url, **s3_server.storage_options())
    fs.put(str(tiny_converted / "train"), f"{root}/train", recursive=True)
    return url


def _endpoint_only(server) -> dict:
    return {"client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"}}


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


class Refusing(http.server.ThreadingHTTPServer):
    """Answers every request with ``status`` (401 or 403) in the body ``flavour`` expects (S3's
    XML, GCS's JSON, or plain text; none for HEAD), counting the requests."""

    daemon_threads = True

    def __init__(self, status: int = 403, flavour: str = "s3") -> None:
        self.status, self.flavour, self.requests = status, flavour, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def answer(self) -> None:
                server.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = server.body()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json" if server.flavour == "gcs" else "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer

        super().__init__((HOST, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def body(self) -> bytes:
        if self.flavour == "gcs":
            return b'{"error": {"code": %d, "message": "Anonymous caller does not have storage.objects.get access"}}' % self.status
        code = "AccessDenied" if self.status == 403 else "InvalidAccessKeyId"
        return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>Access Denied</Message></Error>".encode()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def __enter__(self) -> "Refusing":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class BlackHole:
    """A port that takes no new connection: its accept queue is full, so a connect gets no
    answer at all (a firewalled or dead host), on 127.0.0.1."""

    def __enter__(self) -> "BlackHole":
        self.server = socket.socket()
        self.server.bind((HOST, 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((HOST, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect((HOST, self.port))
            pytest.skip("this kernel completes connections beyond a full accept queue")
        except OSError:
            pass
        finally:
            probe.close()
        return self

    def __exit__(self, *exc) -> None:
        for s in self.fillers:
            s.close()
        self.server.close()


# -- no credentials --------------------------------------------------------------------------------

def test_the_loaders_without_credentials_fail_at_once_naming_the_url_and_the_fix(s3_server, s3_shards, no_aws_credentials):
    for dataset in (IndexedKinetics, StreamingKinetics):
        start = time.monotonic()
        with pytest.raises(LoaderStorageError) as info:
            dataset(s3_shards, storage_options=_endpoint_only(s3_server), transport=FAST)
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert info.value.kind == CREDENTIALS and "\n" not in message
        assert message.startswith(f"{s3_shards}/train/index.json: no credentials found (NoCredentialsError")
        assert "AWS_ACCESS_KEY_ID" in message and "AWS_PROFILE" in message and "storage_options" in message
    # with them, the same URL opens
    assert len(IndexedKinetics(s3_shards, storage_options=s3_server.storage_options())) > 0


def test_the_converter_without_credentials_prints_one_line(s3_server, tiny_dataset, tmp_path):  # noqa: F811
    url = f"s3://{s3_server.make_bucket()}/out"
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "clipshards.convert", str(tiny_dataset), url, "-T", "8", "-S", "8", "--workers", "1",
         "--no-progress", "-q", "--storage-option", f"client_kwargs.endpoint_url={s3_server.endpoint}"],
        env=_no_aws_environment(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1
    line = _one_line(run.stderr)
    assert line.startswith(f"ERROR clipshards: {url}/train: no credentials found (NoCredentialsError")
    assert "AWS_ACCESS_KEY_ID" in line and "--storage-option" in line
    assert time.monotonic() - start < 30


def test_credential_errors_are_not_retried():
    from botocore.exceptions import NoCredentialsError
    from google.auth.exceptions import DefaultCredentialsError

    for error, fix in ((NoCredentialsError(), "AWS_ACCESS_KEY_ID"),
                       (DefaultCredentialsError("Your default credentials were not found."), "GOOGLE_APPLICATION_CREDENTIALS")):
        calls = []

        def request():
            calls.append(1)
            raise error

        url = "s3://b/k/train/x.tar" if fix.startswith("AWS") else "gs://b/k/train/x.tar"
        with pytest.raises(TransportError) as info:
            retrying(request, url=url, what="read", options=FAST)
        assert len(calls) == 1 and info.value.kind == CREDENTIALS and fix in str(info.value)
        assert str(info.value).startswith(f"{url}: read failed after 1 attempt (last error {type(error).__name__}")
        again = pickle.loads(pickle.dumps(info.value))  # from a DataLoader worker to the main process
        assert str(again) == str(info.value) and again.kind == CREDENTIALS and isinstance(again, StorageError)


def test_what_errors_mean():
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
    from gcsfs.retry import HttpError

    assert classify(HttpError({"code": 401, "message": "Anonymous caller"})) == DENIED
    assert classify(OSError("Forbidden: /b/o/x\nno access")) == DENIED  # gcsfs's 403
    assert classify(PermissionError("Access Denied")) == DENIED
    assert classify(PermissionError("denied"), remote=False) == ""
    wrapped = FileNotFoundError("https://h/x")
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert classify(wrapped) == UNREACHABLE  # fsspec's HTTP info reports any failure as not found
    assert classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == UNREACHABLE
    assert classify(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1")) == UNREACHABLE
    assert classify(FileNotFoundError("The specified bucket does not exist")) == NO_BUCKET
    assert classify(ConnectionResetError()) == "" and classify(TimeoutError()) == ""  # transient: retried as before


# -- refused: 401 / 403 ------------------------------------------------------------------------------

def test_a_refused_https_dataset_fails_at_once(monkeypatch):
    monkeypatch.setenv("CLIPSHARDS_RETRIES", "5")
    with Refusing(403, "plain") as server:
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            IndexedKinetics(f"{server.endpoint}/k")
        assert time.monotonic() - start < 5 and info.value.kind == DENIED
        assert str(info.value).startswith(f"{server.endpoint}/k/train/index.json: access denied (HTTP 403")
        assert len(server.requests) <= 2  # fsspec's HEAD, then GET: never retried


def test_a_refused_bucket_stops_the_converter_in_one_line(tiny_dataset, tmp_path):
    with Refusing(403, "s3") as server:
        run = subprocess.run(
            [sys.executable, "-m", "clipshards.convert", str(tiny_dataset), "s3://bucket/out", "-T", "8", "-S", "8",
             "--workers", "1", "--no-progress", "-q", "--storage-option", f"client_kwargs.endpoint_url={server.endpoint}",
             "--storage-option", "key=someone", "--storage-option", "secret=not-allowed"],
            env=_no_aws_environment(tmp_path), capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 1
        line = _one_line(run.stderr)
        assert line.startswith("ERROR clipshards: s3://bucket/out/train: access denied (HTTP 403")
        assert "permissions" in line and "not-allowed" not in run.stderr
        assert len(server.requests) <= 6  # the one check of OUT, never retried


@pytest.mark.parametrize("status, said", [(401, "unauthenticated (HTTP 401"), (403, "access denied (HTTP 403")])
def test_a_refused_gcs_bucket(status, said):
    with Refusing(status, "gcs") as server:
        with pytest.raises(StorageError) as info:
            IndexedKinetics("gs://bucket/k", storage_options={"endpoint_url": server.endpoint, "token": "anon"},
                            transport=FAST)
        assert info.value.kind == DENIED and said in str(info.value)
        if status == 401:
            assert "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value)


# -- dead endpoints ------------------------------------------------------------------------------------

def _dead_s3(port: int) -> dict:
    return {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://{HOST}:{port}", "region_name": "us-east-1"}}


def test_a_closed_port_is_given_up_after_connect_timeout(tiny_dataset):
    port = free_port()  # nothing listens there: connections are refused
    for timeout in (1.0, 3.0):
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            StreamingKinetics("s3://bucket/k", storage_options=_dead_s3(port),
                              transport=TransportOptions(connect_timeout=timeout))
        took = time.monotonic() - start
        assert timeout <= took < timeout + 3, took
        assert info.value.kind == UNREACHABLE and f"tried for {timeout:.0f} s" in str(info.value)
        assert "cannot connect to the storage endpoint (" in str(info.value)  # botocore's words, or "no answer within"
        assert "CLIPSHARDS_CONNECT_TIMEOUT" in str(info.value)
    start = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect"):
        convert(tiny_dataset, "s3://bucket/out", frames_per_clip=8, connect_timeout=1.0, storage_options=_dead_s3(port))
    assert time.monotonic() - start < 4


def test_a_dead_endpoint_takes_about_ten_seconds_by_default(tiny_dataset, tmp_path):
    env = _no_aws_environment(tmp_path)
    env.pop("CLIPSHARDS_CONNECT_TIMEOUT", None)
    assert connect_timeout_from_env(env) == 10.0
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "clipshards.convert", str(tiny_dataset), "s3://bucket/out", "-T", "8", "-S", "8",
         "--workers", "1", "--no-progress", "-q", "--storage-option", f"client_kwargs.endpoint_url=http://{HOST}:{free_port()}",
         "--storage-option", "key=k", "--storage-option", "secret=s"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    took = time.monotonic() - start
    assert run.returncode == 1 and 10 <= took < 20, (took, run.stderr)
    line = _one_line(run.stderr)
    assert "s3://bucket/out/train: cannot connect to the storage endpoint" in line and "tried for 10 s" in line


def test_an_endpoint_that_never_answers_is_bounded_too():
    with BlackHole() as hole:
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            IndexedKinetics(f"http://{HOST}:{hole.port}/k", transport=TransportOptions(connect_timeout=2.0))
        assert 2 <= time.monotonic() - start < 6 and info.value.kind == UNREACHABLE


def test_connect_timeout_is_checked():
    with pytest.raises(ValueError, match="connect_timeout=0"):
        TransportOptions(connect_timeout=0)
    with pytest.raises(ValueError, match="CLIPSHARDS_CONNECT_TIMEOUT='soon'"):
        connect_timeout_from_env({"CLIPSHARDS_CONNECT_TIMEOUT": "soon"})
    assert TransportOptions.from_env({"CLIPSHARDS_CONNECT_TIMEOUT": "2.5"}).connect_timeout == 2.5


# -- a wrong split in a bucket -------------------------------------------------------------------------

def test_a_wrong_split_in_a_bucket_lists_the_splits_there(s3_server, s3_shards):  # noqa: F811
    with pytest.raises(FileNotFoundError, match=r"split 'val' was not converted to s3://.*/k, which holds the split 'train'"):
        IndexedKinetics(s3_shards, split="val", storage_options=s3_server.storage_options())
    with pytest.raises(FileNotFoundError, match=r"s3://.*/nothing/train/index.json does not exist: there is nothing at"):
        StreamingKinetics(s3_shards.rsplit("/", 1)[0] + "/nothing", storage_options=s3_server.storage_options())
    with pytest.raises(StorageError, match="the bucket does not exist"):
        IndexedKinetics("s3://no-such-bucket-anywhere/k", storage_options=s3_server.storage_options())
