"""Audio edges: audio that ends before the video, audio that starts after it, in MP4 (AAC)
and AVI (MP3, PCM), with and without resampling and remixing; all equal the reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipshards.convert.synth import VideoSpec, write_video
from reference import assert_same_clips, read_shards, reference_dataset, remux, run_cli

SOURCES = {
    "aac.mp4": VideoSpec(frames=60, seed=1),
    "mp3.avi": VideoSpec(frames=60, codec="mpeg4", audio_codec="mp3", sample_rate=44100, seed=2),
    "pcm.avi": VideoSpec(frames=60, codec="mpeg4", audio_codec="pcm_s16le", sample_rate=16000, channels=1, seed=3),
}


def _audio_before(seconds: float):
    return lambda p: p.stream.type != "audio" or p.pts * p.time_base < seconds


def _audio_after(seconds: float):
    return lambda p: p.stream.type != "audio" or p.pts * p.time_base > seconds


@pytest.fixture(scope="module")
def edges(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio_edges") / "ds"
    scratch = root.parent / "src"
    for name, spec in SOURCES.items():
        src = write_video(scratch / name, spec)
        write_video(root / "train" / "full" / name, spec)
        remux(src, root / "train" / "ends_early" / name, keep=_audio_before(1.0))
        remux(src, root / "train" / "starts_late" / name, keep=_audio_after(0.5))
    return root


@pytest.mark.parametrize("extra, ref", [([], {}), (["--audio-samples", "8000", "--audio-channels", "2"], dict(audio_samples=8000, audio_channels=2))])
def test_audio_edges_equal_reference(edges, tmp_path, extra, ref):
    assert run_cli(edges, tmp_path / "out", "-T", 8, "-S", 8, "--workers", "1", "--no-progress", "-q", *extra) == 0
    got = read_shards(tmp_path / "out" / "train")
    assert_same_clips(got, reference_dataset(edges, frames_per_clip=8, step_between_clips=8, **ref))
    early = [c.audio.shape[1] for c in got if c.meta["path"] == "train/ends_early/aac.mp4"]
    assert early[0] > 0 and early[-1] == 0 and 0 < min(n for n in early if n) < early[0]  # cut inside a clip, then none
    late = [c.audio.shape[1] for c in got if c.meta["path"] == "train/starts_late/aac.mp4"]
    assert late[0] == 0 and late[-1] > 0  # sample 0 plays at its own timestamp, not at 0 s
    assert all(c.audio.shape[0] == (ref.get("audio_channels") or (1 if "pcm" in c.meta["path"] else 2)) for c in got)
