"""The ``videos`` layout's sample format of index version 4 (frames and audio interleaved in
``media.bin``), and reading the outputs of version 3 (audio apart) that users already hold.

The arithmetic is checked against an interleaving built here by its definition (the track,
with frame ``i`` inserted before sample ``p(i)``, rule 10 of the semantics), for any frame
count, frame sizes, rate and first audio time, with hypothesis. The version-3 outputs in
``tests/data/format-v3`` were written by the last release that wrote that version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipshards.convert import convert, verify_output
from clipshards.convert.errors import ConversionMismatch
from clipshards.convert.output import read_clip
from clipshards.convert.schema import ShardFormatError
from clipshards.convert.video_sample import audio_points, frame_starts, split_media
from clipshards.loader import ClipLoader, IndexedKinetics, ShardReadError, StreamingKinetics
from reference import ref_audio_point

V3 = Path(__file__).parent / "data" / "format-v3"


def _interleave(frames: list[bytes], track: np.ndarray, points: list[int]) -> bytes:
    """``media.bin`` by its definition: the track's rows (samples, channels interleaved) with frame
    ``i`` inserted before sample ``points[i]``."""
    rows = np.ascontiguousarray(track.T, dtype="<f4")
    out, done = bytearray(), 0
    for frame, p in zip(frames, points):
        out += rows[done:p].tobytes() + frame
        done = p
    return bytes(out + rows[done:].tobytes())


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 40), fps=st.sampled_from([25.0, 30.0, 30000 / 1001, 12.5, 60.0]),
       rate=st.sampled_from([0, 8000, 11025, 44100]), channels=st.integers(1, 3),
       t_first=st.sampled_from([0.0, -0.021333, 0.05, 1.5]), extra=st.integers(-2000, 3000),
       sizes=st.lists(st.integers(1, 50), min_size=40, max_size=40))
def test_frames_and_track_come_back_from_the_interleaving(n, fps, rate, channels, t_first, extra, sizes):
    """Any frame count, sizes (JPEG: each its own), rate, first audio time (before 0: samples
    before frame 0; late: frames before any sample), and a track ending before or after the
    frames (``extra``): the points are rule 10's, each frame starts where :func:`frame_starts`
    says, and :func:`split_media` gives back every frame and the whole track."""
    k = channels if rate else 1
    total = max(0, int(n / fps * rate) + extra) if rate else 0
    rng = np.random.default_rng(n + total)
    track = rng.standard_normal((k, total)).astype(np.float32)
    frames = [bytes(rng.integers(0, 256, size=sizes[i], dtype=np.uint8)) for i in range(n)]
    points = audio_points(n, fps, rate, t_first, total)
    want = [ref_audio_point(i, fps, rate, t_first, total) if rate else 0 for i in range(n + 1)]
    assert points.tolist() == want
    data = _interleave(frames, track, want[:n])
    lengths = np.array(sizes[:n], dtype=np.int64)
    starts = frame_starts(lengths, points, k)
    assert [data[a: a + b] for a, b in zip(starts.tolist(), sizes[:n])] == frames
    got_frames, got_track = split_media(data, lengths, points, k, total)
    assert [bytes(f) for f in got_frames] == frames
    assert np.array_equal(got_track, track if total else np.empty((1, 0), dtype=np.float32))
    for s in range(n):  # a clip of frames s..e and its audio window [p(s), p(e + 1)) is one byte range
        e = min(n - 1, s + 3)
        end = int(starts[e]) + sizes[e] + 4 * k * (want[e + 1] - want[e])
        span = data[int(starts[s]): end]
        assert len(span) == sum(sizes[s: e + 1]) + 4 * k * (want[e + 1] - want[s])


def test_a_media_member_of_the_wrong_size_is_refused():
    points = audio_points(3, 30.0, 8000, 0.0, 1000)
    with pytest.raises(ShardFormatError, match="media.bin is 9 bytes, 3 frames of 12 bytes and 1000 samples"):
        split_media(b"x" * 9, np.array([4, 4, 4]), points, 1, 1000)
    with pytest.raises(ShardFormatError, match="audio points are out of order"):  # a point past the track
        split_media(b"x" * (12 + 4 * 10), np.array([4, 4, 4]), np.array([0, 5, 11, 10]), 1, 10)


@pytest.fixture(scope="module")
def v4(tmp_path_factory) -> dict[str, Path]:
    """The version-3 fixtures' sources converted by this release, raw and JPEG."""
    base = tmp_path_factory.mktemp("v4")
    out = {}
    for codec in ("raw", "jpeg"):
        out[codec] = base / codec
        convert(V3 / "src", out[codec], frames_per_clip=4, step_between_clips=4, layout="videos", codec=codec,
                workers=1, progress=False)
    return out


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
@pytest.mark.parametrize("T, S, R", [(4, 4, None), (3, 1, None), (4, 2, 15.0), (5, 3, 50.0), (12, 1, None)])
def test_a_version_3_output_reads_as_this_releases(v4, codec, T, S, R):
    """A version-3 output (audio kept apart) gives the clips, audio and labels a version-4 one of
    the same videos gives, for T, S, R below, at and above the source's: a reader that reads both."""
    old_index = json.loads((V3 / f"videos-{codec}" / "train" / "index.json").read_bytes())
    assert old_index["version"] == 3 and old_index["layout"] == "videos"
    assert json.loads((v4[codec] / "train" / "index.json").read_bytes())["version"] == 4
    rate = "source" if R is None else R
    old = IndexedKinetics(V3 / f"videos-{codec}", frames_per_clip=T, step_between_clips=S, frame_rate=rate, with_ids=True)
    new = IndexedKinetics(v4[codec], frames_per_clip=T, step_between_clips=S, frame_rate=rate, with_ids=True)
    assert len(old) == len(new) > 0
    with_audio = 0
    for g in range(len(new)):
        a, b = old[g], new[g]
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)), g
        with_audio += a[1].shape[1] > 0
    assert with_audio and any(new[g][1].shape == (1, 0) for g in range(len(new)))  # the silent video
    batches = list(ClipLoader(StreamingKinetics(V3 / f"videos-{codec}", frames_per_clip=T, step_between_clips=S,
                                                frame_rate=rate, shuffle=False), batch_size=2))
    assert sum(len(b.label) for b in batches) == len(new)
    b = batches[0]
    assert np.array_equal(b.audio[0, :, : int(b.audio_lengths[0])].numpy(), new[0][1].numpy())


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_the_tools_read_both_versions(v4, codec):
    """verify decodes every sample of both versions; the preview's sample is the same video."""
    for out in (V3 / f"videos-{codec}", v4[codec]):
        res = verify_output(out, decode="all", progress=False)
        assert res.ok and res.clips_decoded == 3, res.to_json()
    a, b = read_clip(V3 / f"videos-{codec}", index=1), read_clip(v4[codec], index=1)
    assert np.array_equal(a["video"], b["video"]) and np.array_equal(a["audio"], b["audio"]) and a["label"] == b["label"]


def test_converting_again_into_a_version_3_output_says_what_to_do(tmp_path):
    out = tmp_path / "old"
    shutil.copytree(V3 / "videos-raw", out)
    kw = dict(frames_per_clip=4, step_between_clips=4, layout="videos", codec="raw", workers=1, progress=False)
    with pytest.raises(ConversionMismatch, match="sample format of index version 3.*--overwrite"):
        convert(V3 / "src", out, **kw)
    with pytest.raises(ConversionMismatch, match="videos layout output of format version 3.*interleaves"):
        convert(V3 / "src", out, append=True, **kw)
    convert(V3 / "src", out, overwrite=True, **kw)
    assert json.loads((out / "train" / "index.json").read_bytes())["version"] == 4


def test_a_frame_table_that_disagrees_with_the_audio_is_refused(v4, tmp_path):
    """A JPEG frame table whose offsets do not follow from the frame lengths and the audio points
    (a damaged or hostile member) is refused when its video is first read, naming the member."""
    import tarfile

    out = tmp_path / "bad"
    shutil.copytree(v4["jpeg"], out)
    shard = out / "train" / "train-000000.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name == "00000000.frames.npy")
    data = bytearray(shard.read_bytes())
    row = member.offset_data + member.size - 16 * 14 + 16 * 3  # frame 3's offset
    data[row: row + 8] = (int.from_bytes(data[row: row + 8], "little") + 4).to_bytes(8, "little")
    shard.write_bytes(bytes(data))
    ds = IndexedKinetics(out)
    with pytest.raises(ShardReadError, match="clip 0, member '00000000.frames.npy'.*not where the frames and audio before it end"):
        ds[0]
