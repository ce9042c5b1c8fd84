"""The converter's run guarantees on the ``videos`` layout: resume after SIGKILL gives the bytes of
an uninterrupted run; object storage gives the local bytes and the loader reads clips from it;
Ray gives the local engine's bytes; audio that fails part-way gives what the clips layout gives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.convert.report import EXIT_SKIPPED
from clipshards.loader import IndexedKinetics
from reference import run_command, tree_bytes
from servers import s3_server, tree_bytes as store_bytes  # noqa: F401  (s3_server: fixture)

ARGS = ["-T", "4", "-S", "2", "--layout", "videos", "--shard-size", "100KB", "--no-progress", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos_runs") / "ds"
    make_dataset(root, classes=("a", "b b", "c"), videos_per_class=3, spec=VideoSpec(frames=40))
    (root / "train" / "b b" / "video_000.5_empty.mp4").write_bytes(b"")
    write_video(root / "train" / "b b" / "video_001.5_short.mp4", VideoSpec(frames=3))  # kept: 3 frames
    return root


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("whole") / "out"
    proc = run_command([dataset, out, *ARGS, "--workers", "1"])
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    files = tree_bytes(out)
    assert sum(n.endswith(".tar") for n in files) >= 8  # a video a shard: each is larger than the shard size
    return files


def _markers(out: Path) -> int:
    try:
        return len(os.listdir(out / "train" / "_progress"))
    except FileNotFoundError:
        return 0


def test_resume_after_sigkill_gives_identical_bytes(dataset, uninterrupted, tmp_path):
    seed = random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    out = tmp_path / "out"
    killed = 0
    for target in (rng.randrange(1, 4), rng.randrange(4, 7)):
        proc = subprocess.Popen([sys.executable, "-m", "clipshards.convert", str(dataset), str(out), *ARGS, "--workers", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while _markers(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed, f"seed {seed}: the runs finished before being killed"
    proc = run_command([dataset, out, *ARGS, "--workers", "2"])
    assert proc.returncode == EXIT_SKIPPED, (seed, proc.stderr)
    files = tree_bytes(out, skip=("report.json",))
    assert files == {k: v for k, v in uninterrupted.items()}, seed


def test_object_storage_equals_local_and_loads(s3_server, dataset, uninterrupted, tmp_path):  # noqa: F811
    url = f"s3://{s3_server.make_bucket()}/videos"
    opts = s3_server.storage_options()
    report = convert(dataset, url, frames_per_clip=4, step_between_clips=2, layout="videos", shard_size=102_400,
                     workers=1, progress=False, storage_options=opts)
    assert len(report.skipped) == 1
    remote = {k: v for k, v in store_bytes(url, opts).items() if not k.endswith("report.json")}
    assert remote == {k: v for k, v in uninterrupted.items() if not k.endswith("report.json")}
    local_out = tmp_path / "local"
    local_out.mkdir()
    for name, data in uninterrupted.items():
        (local_out / name).parent.mkdir(parents=True, exist_ok=True)
        (local_out / name).write_bytes(data)
    a = IndexedKinetics(url, frames_per_clip=3, step_between_clips=5, frame_rate=20, storage_options=opts)
    b = IndexedKinetics(local_out, frames_per_clip=3, step_between_clips=5, frame_rate=20)
    assert len(a) == len(b) > 0
    got = a.__getitems__(list(range(len(a))))  # the reads of a batch go out together
    for g, (va, aa, ya) in enumerate(got):
        vb, ab, yb = b[g]
        assert ya == yb and np.array_equal(va.numpy(), vb.numpy()) and np.array_equal(aa.numpy(), ab.numpy()), g


def test_ray_equals_local_engine(dataset, uninterrupted, tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        convert(dataset, out, engine="ray", workers=2, frames_per_clip=4, step_between_clips=2, layout="videos",
                shard_size=102_400, progress=False)
    finally:
        ray.shutdown()
    assert tree_bytes(out) == uninterrupted


def test_audio_failing_part_way_gives_the_clips_layouts_clips(tmp_path):
    """An AAC stream whose packets are garbled from 0.6 s: the clips layout gives later clips empty
    audio (and the clips before theirs); clips cut from the videos layout give the same."""
    from reference import remux

    src = write_video(tmp_path / "src" / "v.mp4", VideoSpec(frames=60, seed=3))
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)

    def garble(p):
        return p.stream.type != "audio" or p.pts * p.time_base < 0.6

    remux(src, root / "train" / "x" / "v.mp4")
    broken = root / "train" / "x" / "w.mp4"
    import av

    with av.open(str(src)) as i, av.open(str(broken), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is None:
                continue
            index = p.stream.index
            if not garble(p):
                q = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                p = q
            p.stream = streams[index]
            o.mux(p)
    for layout in ("clips", "videos"):
        assert convert(root, tmp_path / layout, frames_per_clip=6, step_between_clips=6, layout=layout, workers=1,
                       progress=False).exit_code == 0
    a, b = IndexedKinetics(tmp_path / "clips"), IndexedKinetics(tmp_path / "videos")
    assert len(a) == len(b)
    shapes = []
    for g in range(len(a)):
        (va, aa, ya), (vb, ab, yb) = a[g], b[g]
        assert np.array_equal(va.numpy(), vb.numpy()) and aa.shape == ab.shape and np.array_equal(aa.numpy(), ab.numpy()), g
        shapes.append(tuple(aa.shape))
    assert (1, 0) in shapes and any(s[1] > 0 for s in shapes)
