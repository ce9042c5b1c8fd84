"""Every option is checked when the options are made (issue 13): a ValueError naming the
option, the value and the accepted range; on the command line one line and status 2, before
anything is read or written. ``--frame-rate 1e9`` and ``1e300`` used to hang a run and
``inf`` to raise ZeroDivisionError."""

from __future__ import annotations

import math

import pytest

from clipshards.convert import convert
from clipshards.convert.options import INT_RANGES, MAX_FRAME_RATE, ConvertOptions
from reference import run_command

BAD = [
    ("frame_rate", 1e9, "(0, 1000.0]"),
    ("frame_rate", 1e300, "(0, 1000.0]"),
    ("frame_rate", math.inf, "(0, 1000.0]"),
    ("frame_rate", math.nan, "(0, 1000.0]"),
    ("frame_rate", -1.0, "(0, 1000.0]"),
    ("frame_rate", 0, "(0, 1000.0]"),
    ("frame_rate", "30", "(0, 1000.0]"),
    ("frames_per_clip", 10_001, "1..10000"),
    ("frames_per_clip", 2.0, "1..10000"),
    ("step_between_clips", -3, "1..1000000"),
    ("video_width", 100_000, "0..16384"),
    ("video_min_dimension", -1, "0..16384"),
    ("audio_samples", 10**9, "0..768000"),
    ("audio_channels", 9, "0..8"),
    ("jpeg_quality", 0, "1..100"),
    ("shard_size", 100, "1024..1099511627776"),
    ("shard_size", 2**41, "1024..1099511627776"),
    ("workers", -1, "0..1024"),
    ("decoder_threads", 10**6, "0..256"),
    ("split", "", "one of"),
    ("codec", "", "one of"),
    ("checksum", "", "one of"),
    ("num_classes", "", "one of"),
    ("extensions", "", "empty extension"),
    ("extensions", ",", "empty extension"),
]


@pytest.mark.parametrize("name, value, accepted", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_option_is_refused_naming_it(name, value, accepted):
    values = {"frames_per_clip": 4, name: value}
    with pytest.raises(ValueError) as exc:
        ConvertOptions(**values)
    message = str(exc.value)
    assert message.startswith(f"{name}={value!r}: ") and accepted in message and "\n" not in message


def test_the_bounds_themselves_are_accepted():
    for name, (lo, hi, _) in INT_RANGES.items():
        for v in (lo, hi):
            ConvertOptions(**{"frames_per_clip": 4, name: v})
    ConvertOptions(frames_per_clip=4, frame_rate=MAX_FRAME_RATE)
    ConvertOptions(frames_per_clip=4, frame_rate=0.5)


def test_convert_refuses_before_reading_anything(tmp_path):
    with pytest.raises(ValueError, match=r"frame_rate=inf"):
        convert(tmp_path / "no such dataset", tmp_path / "out", frames_per_clip=4, frame_rate=math.inf)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--frame-rate", "1e9"], "frame_rate=1000000000.0"),
        (["--frame-rate", "1e300"], "frame_rate=1e+300"),
        (["--frame-rate", "inf"], "frame_rate=inf"),
        (["--frame-rate", "nan"], "frame_rate=nan"),
        (["--shard-size", "1TB", "--shard-size", "2TiB"], "shard_size=2199023255552"),
        (["--workers", "-2"], "workers=-2"),
        (["--video-height", "-1"], "video_height=-1"),
    ],
)
def test_command_line_gives_one_line_and_status_2(tmp_path, tiny_dataset, flags, words):
    proc = run_command([tiny_dataset, tmp_path / "out", "-T", "4", "--no-progress", *flags], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"python -m clipshards.convert: error: {words}: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
