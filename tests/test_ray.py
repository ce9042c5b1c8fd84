"""``--engine ray``: a local Ray cluster (2 CPUs) gives the local engine's bytes, also when a
task's worker process dies, and also when the output (and the spool) is on S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipshards.convert import api
from clipshards.convert.worker import convert_video

from servers import CONVERT_KW, assert_same_conversion, s3_server, tree_bytes  # noqa: F401  (s3_server: fixture)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for this module (start-up is slow: one per module)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_output_equals_local_engine(ray_cluster, tiny_dataset, tiny_converted, tmp_path):
    out = tmp_path / "ray"
    report = api.convert(tiny_dataset, out, engine="ray", workers=2, **CONVERT_KW)
    assert report.clips > 0 and not report.skipped
    assert_same_conversion(tree_bytes(tiny_converted), tree_bytes(out))
    assert sorted(os.listdir(out / "train")) == sorted(os.listdir(tiny_converted / "train"))  # no _spool, _progress


def test_ray_task_whose_worker_dies_is_retried(ray_cluster, tiny_dataset, tiny_converted, tmp_path, monkeypatch):
    """The task of video 3 kills its worker process on its first attempt (a marker file
    remembers the attempt across processes); Ray runs it again and the bytes are unchanged."""
    marker = tmp_path / "crashed-once"
    victim = 3

    def crash_once(task):
        if task.entry.index == victim:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(17)
        return convert_video(task)

    monkeypatch.setattr(api, "convert_video", crash_once)
    out = tmp_path / "ray-crash"
    report = api.convert(tiny_dataset, out, engine="ray", workers=2, **CONVERT_KW)
    assert marker.exists(), "the victim task never ran"
    assert int(marker.read_text()) != os.getpid()  # it died in a Ray worker, not here
    assert not report.skipped
    assert_same_conversion(tree_bytes(tiny_converted), tree_bytes(out))


def test_ray_cli_to_s3(ray_cluster, s3_server, tiny_dataset, tiny_converted, tmp_path):
    """``clipshards convert --engine ray --ray-address ADDR`` from another driver process, to
    ``s3://``: workers spool through the bucket, the driver packs; no object is left over."""
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/conv"
    opts = s3_server.storage_options()
    cmd = [
        sys.executable, "-m", "clipshards.convert", str(tiny_dataset), url, "--engine", "ray",
        "--ray-address", ray_cluster, "--workers", "2", "--frames-per-clip", "8", "--step-between-clips", "4",
        "--layout", "clips",
        "--shard-size", str(CONVERT_KW["shard_size"]), "--no-progress",
        f"--storage-option=key={opts['key']}", f"--storage-option=secret={opts['secret']}",
        f"--storage-option=client_kwargs.endpoint_url={s3_server.endpoint}",
        f"--storage-option=client_kwargs.region_name={opts['client_kwargs']['region_name']}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = tree_bytes(url, opts)
    assert_same_conversion(tree_bytes(tiny_converted), remote)
    assert not any("_spool" in name or "_progress" in name for name in remote)
    assert opts["secret"] not in proc.stdout + proc.stderr
