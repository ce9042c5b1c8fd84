"""Converting straight to object storage: moto (S3) and gcp-storage-emulator (GCS) on 127.0.0.1.

The bytes written there equal a local conversion's; an upload cut short leaves no object; a
conversion killed mid-upload resumes from its markers; credentials appear in no output file
and no log record.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys

import pytest

from clipshards.convert import convert
from clipshards.convert.cli import main
from clipshards.convert.storage import Location, parse_storage_options, redact

from servers import (  # noqa: F401  (gcs_server, s3_server: fixtures)
    CONVERT_KW,
    Fault,
    FaultProxy,
    assert_same_conversion,
    gcs_server,
    s3_server,
    tree_bytes,
)

SHARDS = 42  # tiny_converted: one clip per shard


@pytest.fixture(params=["s3", "gs"])
def store(request):
    """``(scheme, server)`` for each object store."""
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return request.param, server


def test_convert_to_object_store_equals_local(store, tiny_dataset, tiny_converted):
    scheme, server = store
    url = f"{scheme}://{server.make_bucket()}/conv"
    report = convert(tiny_dataset, url, workers=1, storage_options=server.storage_options(), **CONVERT_KW)
    assert report.out == f"{url}/train" and len(report.shards) == SHARDS
    remote = tree_bytes(url, server.storage_options())
    assert_same_conversion(tree_bytes(tiny_converted), remote)
    assert not any("_progress" in n or "_spool" in n for n in remote)
    # a second run finds the finished index and writes nothing
    again = convert(tiny_dataset, url, workers=1, storage_options=server.storage_options(), **CONVERT_KW)
    assert again.resumed_shards == SHARDS


@pytest.mark.parametrize("size", [100, 6 * 1024 * 1024], ids=["small", "multipart"])
def test_failed_upload_leaves_no_object(store, size):
    """An exception inside ``open_atomic`` abandons the upload: nothing appears under the name,
    not even after the file object is garbage collected (gcsfs would upload its buffer then)."""
    scheme, server = store
    if scheme == "gs" and size > 5 * 1024 * 1024:
        pytest.skip("the GCS emulator does not implement cancelling a resumable upload (501)")
    loc = Location(f"{scheme}://{server.make_bucket()}/p", server.storage_options())

    def write_then_fail() -> None:
        with loc.open_atomic("part.bin") as fh:
            fh.write(b"x" * size)
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_then_fail()
    gc.collect()
    assert loc.listdir() == []
    with loc.open_atomic("whole.bin") as fh:
        fh.write(b"y" * size)
    assert loc.listdir() == ["whole.bin"] and loc.size("whole.bin") == size
    if scheme == "s3":
        for bucket in server.client().list_buckets()["Buckets"]:
            assert not server.client().list_multipart_uploads(Bucket=bucket["Name"]).get("Uploads")


def _store_flags(options: dict) -> list[str]:
    flags = []

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flags.append(f"--storage-option={prefix}{k}={v}")

    walk("", options)
    return flags


@pytest.mark.parametrize(
    "scheme,sig,nth",
    [("s3", signal.SIGKILL, 1), ("s3", signal.SIGINT, 1), ("gs", signal.SIGKILL, 2)],
    ids=["s3-kill", "s3-interrupt", "gs-kill"],
)
def test_killed_conversion_resumes(scheme, sig, nth, request, tiny_dataset, tiny_converted):
    """A converter process is stopped while shard 5 is being uploaded (the proxy holds that
    request). No partial shard and no index is visible; the next run keeps shards 0-4 and the
    result equals a local conversion byte for byte."""
    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_server")
    bucket = server.make_bucket()
    url = f"{scheme}://{bucket}/conv"
    # S3: the shard is one PUT; GCS: a resumable session, held at its data request (the 2nd)
    with FaultProxy(server.endpoint, [Fault("hold", nth=nth, path="train-000005.tar")]) as proxy:
        cmd = [
            sys.executable, "-m", "clipshards.convert", str(tiny_dataset), url, "--workers", "1",
            "--frames-per-clip", "8", "--step-between-clips", "4", "--layout", "clips",
            "--shard-size", str(CONVERT_KW["shard_size"]),
            "--no-progress", *_store_flags(server.storage_options(proxy.endpoint)),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            held = proxy.held.wait(120)
            assert held, f"the upload of shard 5 never started: {proc.communicate(timeout=60)}"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proxy.release()
    assert proc.returncode != 0, err

    loc = Location(f"{url}/train", server.storage_options())
    names = loc.listdir()
    assert "index.json" not in names and "train-000005.tar" not in names
    assert [n for n in names if n.endswith(".tar")] == [f"train-{i:06d}.tar" for i in range(5)]
    assert len(loc.listdir("_progress")) == 5

    report = convert(tiny_dataset, url, workers=1, storage_options=server.storage_options(), **CONVERT_KW)
    assert report.resumed_shards == 5 and len(report.shards) == SHARDS
    assert_same_conversion(tree_bytes(tiny_converted), tree_bytes(url, server.storage_options()))


def test_credentials_never_logged_or_written(s3_server, tiny_dataset, tmp_path, caplog, capsys, monkeypatch):
    """Secret storage options, given to the API and to the CLI, appear in no log record (any
    logger, DEBUG level), no output, no error message and no file written."""
    secret = "Sup3rSecret-" + os.urandom(6).hex()
    opts = s3_server.storage_options()
    opts["secret"] = secret  # moto accepts any secret
    url = f"s3://{s3_server.make_bucket()}/conv"
    caplog.set_level(logging.DEBUG)
    for name in ("clipshards", "clipshards.convert", "clipshards.convert.api"):  # whatever earlier tests set
        caplog.set_level(logging.DEBUG, logger=name)
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    convert(tiny_dataset, url, workers=1, storage_options=opts, **CONVERT_KW)

    cli_url = f"s3://{s3_server.make_bucket()}/cli"
    flags = _store_flags(opts) + ["--storage-option=client_kwargs.aws_session_token=" + secret + "-token"]
    rc = main(["convert", str(tiny_dataset), cli_url, "-T", "8", "-S", "4", "--shard-size", "200000", "--workers", "1", *flags])
    assert rc == 0
    # an error path: a bucket that does not exist
    rc_missing = main(["convert", str(tiny_dataset), "s3://no-such-bucket-here/x", "-T", "8", "--workers", "1", *flags])
    assert rc_missing != 0

    out = capsys.readouterr()
    logged = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)
    assert "***" in logged  # the options were logged, redacted
    assert "s3://no-such-bucket-here/x/train" in logged  # the failure names the URL
    for text in (logged, out.out, out.err):
        assert secret not in text
    files = {**tree_bytes(url, opts), **tree_bytes(cli_url, opts)}
    assert files and not [n for n, data in files.items() if secret.encode() in data]


def test_task_repr_hides_storage_options():
    """Tasks travel to worker processes and Ray; if one is ever printed, no credential shows."""
    from clipshards.convert.options import ConvertOptions
    from clipshards.convert.worker import VideoTask

    task = VideoTask(None, ConvertOptions(frames_per_clip=8), "s3://b/spool", {"secret": "hunter2-secret"})
    assert "hunter2" not in repr(task) and "s3://b/spool" in repr(task)


def test_redact_and_parse_storage_options():
    opts = parse_storage_options(
        ["key=AKIA", "secret=s", "client_kwargs.endpoint_url=http://127.0.0.1:1", "anon=false", "token=t", "retries=3"]
    )
    assert opts == {"key": "AKIA", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}, "anon": False, "token": "t", "retries": 3}
    assert redact(opts) == {"key": "***", "secret": "***", "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}, "anon": False, "token": "***", "retries": 3}
    with pytest.raises(ValueError, match="'nokey'"):
        parse_storage_options(["nokey"])


def test_credentials_from_environment_and_profile(s3_server, tiny_dataset, tiny_converted, tmp_path, monkeypatch):
    """No storage options: s3fs finds the endpoint and keys in the environment, or a profile."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    url = f"s3://{s3_server.make_bucket()}/env"
    convert(tiny_dataset, url, workers=1, **CONVERT_KW)
    assert_same_conversion(tree_bytes(tiny_converted), tree_bytes(url, s3_server.storage_options()))

    creds = tmp_path / "credentials"
    env = s3_server.env()
    creds.write_text(
        f"[clipshards-test]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    url = f"s3://{s3_server.make_bucket()}/profile"
    convert(tiny_dataset, url, workers=1, storage_options={"profile": "clipshards-test"}, **CONVERT_KW)
    assert_same_conversion(tree_bytes(tiny_converted), tree_bytes(url, s3_server.storage_options()))
