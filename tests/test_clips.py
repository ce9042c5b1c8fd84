"""Clip arithmetic (convert/clips.py) against hand-computed values, the semantics' examples
and the test reference's independent arithmetic (hypothesis)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipshards.convert.clips import (
    ClipSpec,
    audio_window,
    clip_count,
    clip_windows,
    frame_store_counts,
    resampled_frame_indices,
    selected_count,
    selected_index,
)
from reference import ref_indices, ref_windows

NTSC = 30000 / 1001


# -- hand-computed values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, fps, rate, expected",
    [
        (10, 30.0, None, list(range(10))),
        (0, 30.0, None, []),
        (10, 30.0, 15, [0, 2, 4, 6, 8]),  # integral step 2
        (11, 30.0, 15, [0, 2, 4, 6, 8, 10]),  # ceil(11 / 2) entries
        (10, 30.0, 30, list(range(10))),  # step 1
        (10, 30.0, 12, [0, 2, 5, 7]),  # step 2.5, floor(10 * 12 / 30) = 4 entries
        (5, 10.0, 25, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]),  # upsampling: step 0.4, 12 entries
        (10, NTSC, 15, [0, 1, 3, 5, 7]),  # step 1.998, floor(5.005) = 5 entries
        (7, 25.0, 10, [0, 2]),  # step 2.5, floor(7 * 10 / 25) = 2 entries
        (8, 25.0, 10, [0, 2, 5]),  # floor(8 * 10 / 25) = 3 entries
    ],
)
def test_resampled_indices_hand_values(n, fps, rate, expected):
    assert resampled_frame_indices(n, fps, rate) == expected
    assert selected_count(n, fps, rate) == len(expected)
    assert [selected_index(k, fps, rate) for k in range(len(expected))] == expected


@pytest.mark.parametrize(
    "entries, T, S, count",
    [(10, 5, 5, 2), (15, 5, 5, 3), (4, 5, 1, 0), (5, 5, 1, 1), (20, 4, 7, 3), (20, 4, 1, 17), (0, 1, 1, 0), (1, 1, 1, 1)],
)
def test_clip_count_hand_values(entries, T, S, count):
    assert clip_count(entries, T, S) == count
    assert len(clip_windows(list(range(entries)), T, S)) == count


def test_torchvision_docs_example():
    """10 and 15 frames, frames_per_clip=5, step_between_clips=5: 2 + 3 = 5 clips."""
    first = clip_windows(resampled_frame_indices(10, 30.0, None), 5, 5)
    second = clip_windows(resampled_frame_indices(15, 30.0, None), 5, 5)
    assert [c.frame_indices for c in first] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert [c.frame_indices for c in second] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9), (10, 11, 12, 13, 14)]
    assert len(first) + len(second) == 5


def test_windows_with_gaps_and_resampling():
    # S > T leaves frames out; windows index the resampled list, not the source frames
    assert [c.frame_indices for c in clip_windows([0, 2, 5, 7, 10, 12, 15, 17], 2, 3)] == [(0, 2), (7, 10), (15, 17)]
    spec = clip_windows(list(range(12)), 4, 6)[1]
    assert spec == ClipSpec(1, (6, 7, 8, 9)) and (spec.first_frame, spec.last_frame) == (6, 9)


def test_audio_window_hand_values():
    # 16 frames at 30 fps of 44.1 kHz: 16 / 30 * 44100 = 23520 samples (semantics rule 10)
    assert audio_window(0, 15, 30.0, 44100, 0.0) == (0, 23520)
    assert audio_window(16, 31, 30.0, 44100, 0.0) == (23520, 47040)
    # audio starting 0.1 s late: its sample 0 plays at 0.1 s
    assert audio_window(0, 15, 30.0, 44100, 0.1) == (0, 19110)
    assert audio_window(30, 45, 30.0, 44100, 0.1) == (39690, 63210)
    # capped by the samples there are; an empty (not negative) range past the end
    assert audio_window(30, 45, 30.0, 44100, 0.0, total_samples=50000) == (44100, 50000)
    assert audio_window(60, 75, 30.0, 44100, 0.0, total_samples=50000) == (88200, 88200)
    # rounding half up: 1 frame at 30 fps of 16 kHz = 533.33 samples
    assert audio_window(0, 0, 30.0, 16000, 0.0) == (0, 533)
    assert audio_window(1, 1, 30.0, 16000, 0.0) == (533, 1067)


def test_audio_window_nasa_lengths():
    """29.97 fps, 16 kHz, T=S=16: 16 * 1001 / 30000 * 16000 = 8541.87 samples per clip, so the
    lengths are 8542 with an 8541 about every 7.5 clips (the semantics' 8542/8541)."""
    lengths = []
    for c in range(24):
        a, b = audio_window(16 * c, 16 * c + 15, NTSC, 16000, 0.0)
        assert a == math.floor(Fraction(16 * c * 1001, 30000) * 16000 + Fraction(1, 2))
        lengths.append(b - a)
    assert set(lengths) == {8541, 8542}
    assert [i for i, n in enumerate(lengths) if n == 8541] == [3, 11, 18]


def test_frame_store_counts_hand_values():
    assert frame_store_counts(20, 8, 4) == (20, 32)  # 4 clips, overlapping: each middle frame twice
    assert frame_store_counts(20, 4, 7) == (12, 12)  # gaps: no frame stored twice
    assert frame_store_counts(3, 4, 1) == (0, 0)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: clip_count(10, 0, 1), "frames_per_clip"),
        (lambda: clip_count(10, 4, 0), "step_between_clips"),
        (lambda: resampled_frame_indices(-1, 30.0, None), "num_frames"),
        (lambda: resampled_frame_indices(10, 30.0, 0), "frame_rate"),
        (lambda: resampled_frame_indices(10, 0.0, 15), "fps"),
    ],
)
def test_bad_arguments_raise_valueerror(call, words):
    with pytest.raises(ValueError, match=words):
        call()


# -- properties against the reference's own arithmetic -------------------------------------

FPS = st.sampled_from([30.0, 25.0, 24.0, NTSC, 24000 / 1001, 60.0, 15.0, 12.5, 10.0, 7.0])
RATE = st.one_of(st.none(), st.sampled_from([1.0, 5.0, 7.5, 10.0, 12.0, 15.0, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]),
                 st.floats(min_value=0.5, max_value=120.0, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 2000), fps=FPS, rate=RATE)
def test_resampled_indices_match_reference(n, fps, rate):
    got = resampled_frame_indices(n, fps, rate)
    assert got == ref_indices(n, fps, rate)
    assert selected_count(n, fps, rate) == len(got)
    assert all(selected_index(k, fps, rate) == i for k, i in enumerate(got))
    assert all(a <= b for a, b in zip(got, got[1:]))
    assert all(0 <= i < n for i in got)
    if rate is not None and rate <= fps:
        assert len(set(got)) == len(got)  # downsampling never repeats a frame


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), T=st.integers(1, 40), S=st.integers(1, 40))
def test_windows_match_reference(n, T, S):
    entries = list(range(100, 100 + n))
    specs = clip_windows(entries, T, S)
    assert [list(c.frame_indices) for c in specs] == ref_windows(entries, T, S)
    assert [c.clip_index for c in specs] == list(range(len(specs)))
    assert len(specs) == clip_count(n, T, S) == (max(0, (n - T) // S + 1) if n >= T else 0)
    distinct, stored = frame_store_counts(n, T, S)
    assert stored == sum(len(c.frame_indices) for c in specs)
    assert distinct == len({i for c in specs for i in c.frame_indices})


@settings(max_examples=300, deadline=None)
@given(
    fps=FPS, sr=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    T=st.integers(1, 64), clips=st.integers(1, 30), t_first=st.sampled_from([0.0, 0.021333, 0.5, -0.02]),
)
def test_audio_windows_tile_when_clips_touch(fps, sr, T, clips, t_first):
    """With S == T consecutive clips' audio ranges touch exactly: no sample lost or doubled."""
    ranges = [audio_window(c * T, c * T + T - 1, fps, sr, t_first) for c in range(clips)]
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:]):
        assert a0 <= b0 == a1 <= b1
    for a, b in ranges:
        assert abs((b - a) - T / fps * sr) <= 1 + 1e-6 or a == 0
