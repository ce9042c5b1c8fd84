"""The converter's faster paths give the bytes of the plain ones.

Decoding ahead in a thread (a core to spare), clips whose frames are stacked only when a raw
clip needs them, and JPEG frames encoded through Pillow's encoder with ``save``'s own
arguments: each is checked here against the plain path, and the thread's stop and error
handling against a generator that records what happened to it.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from clipshards.convert import convert
from clipshards.convert import jpeg as jpeg_mod
from clipshards.convert.decode import ClipFrames, iter_clips
from clipshards.convert.jpeg import encode_rgb_jpeg
from clipshards.convert.prefetch import prefetch
from clipshards.convert.synth import VideoSpec, write_video

from reference import tree_bytes


def _save(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    big = rng.integers(0, 256, size=(70, 131, 3), dtype=np.uint8)
    big[10:40, 20:90] = (200, 40, 10)
    padded = np.zeros((48, 80 * 3 + 36), dtype=np.uint8)  # rows with padding, as a scaler's output
    padded[:, : 80 * 3] = rng.integers(0, 256, size=(48, 80 * 3))
    return [
        big,  # C-contiguous, odd width
        big[5:60, 7:100],  # a crop: strided rows inside a bigger array
        padded[:, : 80 * 3].reshape(48, 80, 3),  # padded rows
        big[::2, ::3],  # pixels not adjacent: copied first
        np.full((1, 1, 3), 17, dtype=np.uint8),
    ]


@pytest.mark.parametrize("quality", [90, 75, 100, 5])
def test_jpeg_frames_are_the_bytes_image_save_writes(quality):
    for frame in _frames():
        assert encode_rgb_jpeg(frame, quality) == _save(frame, quality), frame.shape


def test_jpeg_falls_back_to_save_when_the_direct_call_differs(monkeypatch):
    """A Pillow whose direct encoder call does not give ``save``'s bytes (here: its output
    altered) is noticed on the probe image; frames then go through ``save``, bytes unchanged."""
    real = jpeg_mod._encode_to_scratch

    def altered(image, rawmode, config):
        return real(image, rawmode, config) + b"x"

    monkeypatch.setattr(jpeg_mod, "_direct", {})
    monkeypatch.setattr(jpeg_mod, "_encode_to_scratch", altered)
    frame = _frames()[1]
    assert encode_rgb_jpeg(frame, 90) == _save(frame, 90)
    assert jpeg_mod._direct == {90: None}


def test_jpeg_falls_back_to_save_when_the_direct_call_fails(monkeypatch):
    def failing(image, rawmode, config):
        raise TypeError("an encoder that takes other arguments")

    monkeypatch.setattr(jpeg_mod, "_direct", {})
    monkeypatch.setattr(jpeg_mod, "_encode_to_scratch", failing)
    frame = _frames()[2]
    assert encode_rgb_jpeg(frame, 75) == _save(frame, 75)
    assert jpeg_mod._direct == {75: None}


def test_jpeg_frames_from_threads_are_each_their_own(tmp_path):
    """Each thread encodes into its own scratch file and image: frames encoded at once in
    several threads give the bytes each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    frames = _frames()[:3] * 20
    expected = [_save(f, 90) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda f: encode_rgb_jpeg(f, 90), frames)) == expected


def _encode_all(frames: list[np.ndarray]) -> list[bytes]:
    return [encode_rgb_jpeg(f, 90) for f in frames]


def test_jpeg_in_forked_processes_after_the_parent_encoded():
    """The parent encodes first (its scratch file exists), then forked workers encode at once:
    each must use a scratch file of its own, not the parent's (shared with every child)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    frames = _frames()[:3] * 10
    expected = [_save(f, 90) for f in frames]
    assert _encode_all(frames[:1]) == expected[:1]
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_encode_all, [frames] * 6))
    assert all(r == expected for r in results)


def test_jpeg_refuses_what_is_not_an_rgb_frame():
    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_jpeg(np.zeros((4, 4, 3), dtype=np.float32), 90)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        encode_rgb_jpeg(np.zeros((4, 4), dtype=np.uint8), 90)


def test_clip_frames_stack_only_when_asked():
    frames = [f[:, :, :] for f in np.arange(4 * 6 * 5 * 3, dtype=np.uint8).reshape(4, 6, 5, 3)]
    clip = ClipFrames(frames)
    assert clip.shape == (4, 6, 5, 3) and clip.dtype == np.uint8 and clip.ndim == 4 and len(clip) == 4
    assert clip[2] is frames[2]
    stacked = np.asarray(clip)
    assert stacked.flags.c_contiguous and np.array_equal(stacked, np.stack(frames))
    with pytest.raises(ValueError):
        ClipFrames([])


class _Source:
    """A generator that records how far it got and whether its ``finally`` ran, and in which thread."""

    def __init__(self, n: int, fail_at: int = -1):
        self.n, self.fail_at = n, fail_at
        self.made = 0
        self.closed_in: str = ""

    def __iter__(self):
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise RuntimeError(f"item {i} failed")
                self.made += 1
                yield i
        finally:
            self.closed_in = threading.current_thread().name


def test_prefetch_keeps_the_order_and_stays_within_depth():
    src = _Source(200)
    seen = []
    for item in prefetch(iter(src), depth=3):
        assert src.made - len(seen) <= 3 + 2  # the queue, the item being handed over, the one yielded
        seen.append(item)
    assert seen == list(range(200))
    assert src.closed_in == "clipshards-decode"


def test_prefetch_raises_the_sources_error_after_the_items_before_it():
    src = _Source(50, fail_at=17)
    seen = []
    with pytest.raises(RuntimeError, match="item 17 failed"):
        for item in prefetch(iter(src), depth=2):
            seen.append(item)
    assert seen == list(range(17))


def test_prefetch_stops_the_thread_when_the_consumer_stops():
    src = _Source(10_000)
    it = prefetch(iter(src), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert src.closed_in == "clipshards-decode"  # closed by its own thread before close() returned
    assert src.made < 20
    assert not [t for t in threading.enumerate() if t.name == "clipshards-decode"]


def test_prefetch_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(prefetch(iter([1]), depth=0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed_paths")
    for i in range(3):
        write_video(root / "train" / f"c{i % 2}" / f"v{i}.mp4", VideoSpec(frames=45 + 7 * i, width=72, height=40, seed=i))
    return root


@pytest.mark.parametrize("codec, layout, T, S", [("raw", "clips", 8, 8), ("jpeg", "clips", 8, 3), ("jpeg", "videos", 8, 4),
                                                 ("raw", "videos", 8, 4)])
def test_decoding_ahead_gives_the_same_bytes(videos, tmp_path, monkeypatch, codec, layout, T, S):
    import clipshards.convert.video_encoder as video_encoder
    import clipshards.convert.worker as worker

    opts = dict(frames_per_clip=T, step_between_clips=S, codec=codec, layout=layout, workers=1, progress=False)
    out = {}
    for ahead in (True, False):
        monkeypatch.setattr(worker, "spare_core", lambda workers, ahead=ahead: ahead)
        monkeypatch.setattr(video_encoder, "spare_core", lambda workers, ahead=ahead: ahead)
        out[ahead] = tmp_path / f"ahead_{ahead}"
        report = convert(videos, out[ahead], **opts)
        assert report.clips > 0 and not report.skipped
    a, b = tree_bytes(out[True]), tree_bytes(out[False])
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a), \
        [k for k in a if a[k] != b.get(k)]


def test_clips_decoded_ahead_are_those_of_iter_clips(videos):
    path = str(next(videos.glob("train/*/v1.mp4")))
    kw = dict(frames_per_clip=6, step_between_clips=5, frame_rate=12.0)
    plain = [(c.clip_index, c.frame_indices, np.asarray(c.video), c.audio) for c in iter_clips(path, **kw)]
    ahead = [(c.clip_index, c.frame_indices, np.asarray(c.video), c.audio) for c in prefetch(iter_clips(path, **kw), depth=2)]
    assert len(plain) == len(ahead) >= 3
    for p, a in zip(plain, ahead):
        assert p[:2] == a[:2] and np.array_equal(p[2], a[2]) and np.array_equal(p[3], a[3])


def test_audio_decoded_ahead_fails_where_frame_by_frame_decoding_does(tmp_path):
    """Audio packets garbled after the 40th: both ways give the same clips, full audio up to
    the damage and empty audio after it, with the same reason."""
    import av

    from clipshards.convert.decode import VideoInfo

    src = write_video(tmp_path / "src.mp4", VideoSpec(frames=120, seed=4))
    bad = tmp_path / "bad_audio.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(src)) as i, av.open(str(bad), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        audio_packets = 0
        for p in i.demux():
            if p.dts is None:
                continue
            index, kind = p.stream.index, p.stream.type
            if kind == "audio":
                audio_packets += 1
                if audio_packets > 40:
                    q = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                    q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                    p = q
            p.stream = streams[index]
            o.mux(p)
    runs = {}
    for ahead in (False, True):
        info = VideoInfo()
        clips = list(iter_clips(str(bad), frames_per_clip=8, step_between_clips=8, info=info, audio_ahead=ahead))
        runs[ahead] = (clips, info.audio_error)
    (plain, why), (ahead, why_ahead) = runs[False], runs[True]
    assert "audio decode failed" in why and why == why_ahead
    lengths = [c.audio.shape[1] for c in plain]
    assert lengths[0] > 0 and lengths[-1] == 0, lengths
    assert len(plain) == len(ahead)
    for p, a in zip(plain, ahead):
        assert p.frame_indices == a.frame_indices and np.array_equal(p.audio, a.audio)
        assert np.array_equal(np.asarray(p.video), np.asarray(a.video))
