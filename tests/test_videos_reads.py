"""What one clip of a ``videos`` layout output costs to read, counted at the transport: one
read of its distinct frames and its audio window, nothing else (plus, for JPEG, the video's
frame table once), for a frame rate at and above the source's; below it, the frames it skips
are read along where small (JPEG), else each kept frame is a read with its audio (raw).

The frames are 192x144 raw (81 KiB, over the local gap limit, so skipped frames are not read
along) or small JPEGs. The transport is a real one; the test only wraps its read calls to
count calls and bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clipshards.convert import convert
from clipshards.convert.synth import VideoSpec, make_dataset, write_video
from clipshards.loader import IndexedKinetics
from clipshards.loader.video_ranges import LOCAL_MAX_GAP, REMOTE_MAX_GAP
from reference import ref_indices, ref_windows
from servers import HTTPFileServer

T, S = 8, 4
W, H = 192, 144
FRAME = W * H * 3
RATES = {"R<fps": 15.0, "R=fps": "source", "R>fps": 60.0}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reads") / "ds"
    make_dataset(root, classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=40, width=W, height=H))
    write_video(root / "train" / "b" / "silent.mp4", VideoSpec(frames=40, width=W, height=H, audio_codec=None))
    return root


@pytest.fixture(scope="module", params=["raw", "jpeg"])
def out(request, root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"reads_{request.param}") / "out"
    convert(root, out, frames_per_clip=T, step_between_clips=T, layout="videos", codec=request.param, workers=1,
            progress=False)
    return out


def _clips(out: Path, rate) -> list[tuple[int, list[int]]]:
    """``(video index, source frames)`` of every clip, by torchvision's rules (tests/reference.py)."""
    index = json.loads((out / "train" / "index.json").read_bytes())
    r = None if rate == "source" else rate
    return [(v["index"], w) for v in index["videos"] if v["status"] == "ok"
            for w in ref_windows(ref_indices(v["frames"], v["fps"], r), T, S)]


def _jpeg_lengths(out: Path) -> dict[int, np.ndarray]:
    """``video index -> each frame's JPEG length``, from the ``frames.npy`` members (tarfile, np.load)."""
    found = {}
    for shard in sorted((out / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, _, rest = m.name.partition(".")
                if rest == "frames.npy":
                    found[int(key)] = np.load(io.BytesIO(tar.extractfile(m).read()), allow_pickle=False)[:, 1]
    return found


def _runs(frames: list[int]) -> int:
    """Runs of consecutive distinct frames."""
    distinct = sorted(set(frames))
    return 1 + sum(b != a + 1 for a, b in zip(distinct, distinct[1:]))


class Counted:
    """Calls and bytes of a transport's read methods (each still does the real read; the reads
    ``read_many`` makes count as its own)."""

    def __init__(self, transport) -> None:
        self.calls = {"read_into": 0, "read_many": 0, "read_buffer": 0}
        self.bytes = 0
        self.inside = False
        for name in self.calls:
            setattr(transport, name, self._wrap(name, getattr(transport, name)))

    def _wrap(self, name, real):
        def counted(*args, **kwargs):
            if self.inside:
                return real(*args, **kwargs)
            self.calls[name] += 1
            self.inside = True
            try:
                got = real(*args, **kwargs)
            finally:
                self.inside = False
            if name == "read_into":
                self.bytes += got
            elif name == "read_many":
                self.bytes += sum(len(b) for b in got)
            else:
                self.bytes += len(got)
            return got
        return counted

    def take(self) -> tuple[dict, int]:
        calls, nbytes = dict(self.calls), self.bytes
        self.calls, self.bytes = dict.fromkeys(self.calls, 0), 0
        return calls, nbytes


@pytest.mark.parametrize("rate", list(RATES.values()), ids=list(RATES))
def test_a_local_clip_is_one_read_of_its_frames_and_its_audio_window(out, rate):
    jpeg = "jpeg" in out.parent.name
    ds = IndexedKinetics(out, frames_per_clip=T, step_between_clips=S, frame_rate=rate, with_ids=True,
                         output_format="THWC")
    clips = _clips(out, rate)
    assert len(ds) == len(clips) > 0
    lengths = _jpeg_lengths(out) if jpeg else {}
    counted, seen = Counted(ds.index.transport), set()
    for g, (video, frames) in enumerate(clips):
        v, audio, _, video_idx, _ = ds[g]
        calls, nbytes = counted.take()
        assert video_idx == video and v.shape == (T, H, W, 3)
        audio_bytes = 4 * audio.shape[0] * audio.shape[1]
        assert calls["read_buffer"] == 0
        if jpeg:  # one read: the frames from the first to the last (skipped ones are small), their audio
            assert max(int(n.max()) for n in lengths.values()) < LOCAL_MAX_GAP
            assert calls["read_into"] == 1, (g, calls)
            assert calls["read_many"] == (video not in seen)  # its frame table, once a video
            table = 16 * len(lengths[video]) if video not in seen else 0
            assert nbytes == int(lengths[video][min(frames): max(frames) + 1].sum()) + audio_bytes + table, g
        else:  # consecutive frames: one read; skipped frames of 81 KiB are not read: a read a run
            assert calls["read_into"] == _runs(frames) and calls["read_many"] == 0, (g, calls)
            assert nbytes == len(set(frames)) * FRAME + audio_bytes, g
        if rate != 15.0:
            assert calls["read_into"] + calls["read_many"] - (jpeg and video not in seen) == 1, (g, calls)
        seen.add(video)
    if rate == 15.0 and not jpeg:
        assert all(_runs(f) == T for _, f in clips)  # every second frame: each its own read, none skipped read
    silent = [g for g, (video, _) in enumerate(clips) if ds.index.videos[video]["path"].endswith("silent.mp4")]
    assert silent and all(ds[g][1].shape == (1, 0) for g in silent)


@pytest.mark.parametrize("rate", list(RATES.values()), ids=list(RATES))
def test_a_remote_clip_is_one_request_for_its_frames_and_its_audio(out, rate):
    """Over HTTP a clip is one request: its frames and their audio (skipped raw frames of 81 KiB
    are under the remote gap limit: read along), a batch's requests sent together."""
    jpeg = "jpeg" in out.parent.name
    local = IndexedKinetics(out, frames_per_clip=T, step_between_clips=S, frame_rate=rate, output_format="THWC")
    clips = _clips(out, rate)
    assert FRAME < REMOTE_MAX_GAP
    with HTTPFileServer(out) as server:
        ds = IndexedKinetics(server.endpoint, frames_per_clip=T, step_between_clips=S, frame_rate=rate,
                             output_format="THWC")
        stats = ds.index.transport.stats
        shards = {s.name for s in ds.index.shards}
        ds.__getitems__([g for g, (video, _) in enumerate(clips) if g == 0 or clips[g - 1][0] != video])  # frame tables
        for g, (video, frames) in enumerate(clips):
            before = sum(stats.requests[n] for n in shards), sum(stats.bytes[n] for n in shards)
            (v, audio, _), = ds.__getitems__([g])
            requests = sum(stats.requests[n] for n in shards) - before[0]
            nbytes = sum(stats.bytes[n] for n in shards) - before[1]
            want_v, want_a, _ = local[g]
            assert np.array_equal(v.numpy(), want_v.numpy()) and np.array_equal(audio.numpy(), want_a.numpy()), g
            audio_bytes = 4 * audio.shape[0] * audio.shape[1]
            assert requests == 1, (g, requests)
            if not jpeg:
                assert nbytes == (max(frames) - min(frames) + 1) * FRAME + audio_bytes, g
