"""The vectorised clip arithmetic of ``convert/clips.py`` (what the loader uses to count and cut the
clips of a ``videos`` layout output) agrees with the scalar functions the converter cuts clips
with, for any frame count, source fps, frame rate, T and S."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clipshards.convert.clips import (
    audio_sample_at,
    audio_window,
    clip_audio_range,
    clip_count,
    clip_counts,
    resampled_frame_indices,
    selected_count,
    selected_counts,
    selected_index,
    selected_indices,
)

FPS = st.one_of(st.sampled_from([25.0, 30.0, 29.97002997002997, 23.976023976023978, 59.94005994005994, 12.5, 1.0]),
                st.floats(min_value=0.5, max_value=240.0, allow_nan=False, allow_infinity=False))
RATE = st.one_of(st.none(), st.sampled_from([15.0, 30.0, 10.0, 7.5, 60.0, 29.97, 1.0, 120.0]),
                 st.floats(min_value=0.1, max_value=240.0, allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.integers(0, 5000), min_size=1, max_size=8), fps=st.lists(FPS, min_size=8, max_size=8),
       rate=RATE)
def test_selected_counts_match(frames, fps, rate):
    fps = fps[: len(frames)]
    got = selected_counts(np.array(frames), np.array(fps), rate)
    assert got.dtype == np.int64
    assert got.tolist() == [selected_count(n, f, rate) for n, f in zip(frames, fps)]
    assert got.tolist() == [len(resampled_frame_indices(n, f, rate)) for n, f in zip(frames, fps)]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 2000), fps=FPS, rate=RATE)
def test_selected_indices_match(n, fps, rate):
    k = np.arange(selected_count(n, fps, rate))
    got = selected_indices(k, fps, rate)
    assert got.tolist() == [selected_index(int(i), fps, rate) for i in k]
    assert got.tolist() == resampled_frame_indices(n, fps, rate)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.integers(0, 2000), min_size=1, max_size=10), T=st.integers(1, 64), S=st.integers(1, 64))
def test_clip_counts_match(entries, T, S):
    assert clip_counts(np.array(entries), T, S).tolist() == [clip_count(n, T, S) for n in entries]


@settings(max_examples=400, deadline=None)
@given(first=st.integers(0, 5000), length=st.integers(0, 200), fps=FPS, sr=st.sampled_from([8000, 16000, 22050, 44100, 48000, 11025]),
       t_first=st.floats(min_value=-0.5, max_value=3.0, allow_nan=False), total=st.integers(0, 10_000_000))
def test_audio_range_is_the_decoders_window(first, length, fps, sr, t_first, total):
    """The converter's reader asks :func:`audio_window` then caps at what it decoded:
    ``b = min(b, total); a = min(a, b)``. The whole-track cut gives the same range."""
    last = first + length
    a, b = audio_window(first, last, fps, sr, t_first)
    b = min(b, total)
    a = min(a, b)
    assert clip_audio_range(first, last, fps, sr, t_first, total) == (a, b)
    lo, hi = audio_sample_at(np.array([first, last + 1]), fps, sr, t_first, total)
    assert (int(lo), max(int(lo), int(hi))) == (a, b)


def test_frame_rate_above_the_source_repeats_frames():
    """R above the source fps: non-integral step < 1, each source frame used one or more times."""
    idx = selected_indices(np.arange(selected_count(10, 25.0, 60.0)), 25.0, 60.0)
    assert len(idx) == math.floor(10 * 60.0 / 25.0) == 24
    assert idx.tolist() == resampled_frame_indices(10, 25.0, 60.0)
    assert idx[0] == idx[1] == 0 and np.all(np.diff(idx) >= 0) and idx[-1] <= 9
