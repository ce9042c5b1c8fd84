"""Decoding streams: memory is bounded by a few clips, whatever the video's length.

``tracemalloc`` sees every NumPy array (frames, clips, audio chunks); a decoder that kept
the whole video, or all of its audio, would show a peak that grows with the video.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from clipshards.convert import convert
from clipshards.convert.decode import AUDIO_AHEAD, AUDIO_BATCH, iter_clips
from clipshards.convert.synth import VideoSpec, write_video

FRAME_BYTES = 64 * 48 * 3


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("long")
    return {n: Path(write_video(base / f"v{n}.mp4", VideoSpec(frames=n, gop=30))) for n in (100, 600)}


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("T, S, frame_rate", [(8, 4, None), (8, 20, None), (6, 3, 12.0), (4, 4, 50.0)])
def test_iter_clips_peak_does_not_grow_with_length(videos, T, S, frame_rate):
    counts = {}

    def run(n):
        counts[n] = sum(1 for _ in iter_clips(str(videos[n]), frames_per_clip=T, step_between_clips=S, frame_rate=frame_rate))

    short, long = _peak(lambda: run(100)), _peak(lambda: run(600))
    assert counts[600] > 5 * counts[100] > 0
    assert long < 1.3 * short + 64 * 1024, (short, long)
    # the whole 600-frame video is 5.5 MB of RGB (and 20 s of 22 kHz stereo float audio 3.5 MB)
    assert long < 600 * FRAME_BYTES / 5, long


def test_convert_peak_does_not_grow_with_length(videos, tmp_path):
    def run(n):
        root = tmp_path / f"ds{n}"
        (root / "train" / "a").mkdir(parents=True)
        (root / "train" / "a" / "v.mp4").symlink_to(videos[n])
        convert(root, tmp_path / f"out{n}", frames_per_clip=8, step_between_clips=4, layout="clips", workers=1,
                progress=False)

    short, long = _peak(lambda: run(100)), _peak(lambda: run(600))
    # with a core to spare the audio is decoded ahead in a thread, at most AUDIO_AHEAD + 2 batches
    # of AUDIO_BATCH AAC frames (stereo float32): bounded, but how much of it a run's peak catches
    # depends on timing, so the short video's peak may hold less of it than the long one's
    ahead = (AUDIO_AHEAD + 2) * AUDIO_BATCH * 1024 * 2 * 4
    assert long < 1.3 * short + 64 * 1024 + ahead, (short, long)
