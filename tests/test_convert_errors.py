"""Unusable videos: skipped, listed with path and reason, exit status 3; ``--strict``: 4, no index.

Each kind is made from a synthetic video: zero bytes, truncated (MP4 that lost its moov,
fast-start MP4 and AVI that lost their tail), not a video at all, a well-formed container
whose video cannot be decoded, an audio-only file, and a video too short for one clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipshards.convert.report import EXIT_SKIPPED, EXIT_STRICT
from clipshards.convert.synth import VideoSpec, write_video
from reference import assert_same_clips, read_shards, reference_dataset, remux, run_cli, run_command

T = 4


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])


def make_bad(kind: str, dst: Path, scratch: Path) -> None:
    """Write one unusable video of ``kind`` at ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    if kind == "zero_bytes":
        dst.write_bytes(b"")
    elif kind == "not_a_video":
        dst.write_text("this is a text file, not a video\n" * 50)
    elif kind == "truncated_mp4_moov_lost":
        _cut(Path(write_video(scratch / "full.mp4", VideoSpec(frames=30))), dst, 0.5)
    elif kind == "truncated_mp4_faststart":
        src = write_video(scratch / "src.mp4", VideoSpec(frames=60))
        fast = remux(src, scratch / "fast.mp4", options={"movflags": "faststart"})
        _cut(fast, dst, 0.6)
    elif kind == "truncated_avi":
        _cut(Path(write_video(scratch / "full.avi", VideoSpec(frames=60, codec="mpeg4", audio_codec="mp3", sample_rate=44100))), dst, 0.9)
    elif kind == "undecodable":
        remux(write_video(scratch / "ok.mp4", VideoSpec(frames=30)), dst, garble=True)
    elif kind == "audio_only":
        remux(write_video(scratch / "ok.mp4", VideoSpec(frames=30)), dst, video=False)
    elif kind == "too_short":
        write_video(dst, VideoSpec(frames=T - 1))
    else:  # pragma: no cover
        raise AssertionError(kind)


KINDS = {
    # kind: (file name, words the reason must contain)
    "zero_bytes": ("zero.mp4", "empty file"),
    "not_a_video": ("notes.avi", "not a readable media file"),
    "truncated_mp4_moov_lost": ("cut.mp4", "not a readable media file"),
    "truncated_mp4_faststart": ("cut_fast.mp4", "truncated"),
    "truncated_avi": ("cut.avi", "truncated"),
    "undecodable": ("garbled.mp4", "video decode failed"),
    "audio_only": ("sound.mp4", "no video stream"),
    "too_short": ("short.mp4", "too short"),
}


def _good(root: Path) -> None:
    write_video(root / "train" / "a_good" / "one.mp4", VideoSpec(frames=13, seed=1))
    write_video(root / "train" / "z_good" / "two.avi", VideoSpec(frames=11, codec="mpeg4", audio_codec="mp3", seed=2))


@pytest.fixture(scope="module")
def all_bad(tmp_path_factory) -> Path:
    """Two good videos and one of every bad kind, spread over the classes."""
    root = tmp_path_factory.mktemp("all_bad") / "ds"
    _good(root)
    for i, (kind, (name, _)) in enumerate(KINDS.items()):
        make_bad(kind, root / "train" / ("a_good" if i % 2 else "m_bad") / name, root.parent / "scratch" / kind)
    return root


def _check_report(out: Path, expected: dict[str, str]) -> None:
    report = json.loads((out / "train" / "report.json").read_bytes())
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == set(expected), skipped
    for path, words in expected.items():
        assert words in skipped[path], (path, skipped[path])
        assert str(out) not in skipped[path]
    index = json.loads((out / "train" / "index.json").read_bytes())
    status = {v["path"]: (v["status"], v["reason"], v["clips"]) for v in index["videos"]}
    for path in expected:
        assert status[path][0] == "skipped" and status[path][1] == skipped[path] and status[path][2] == 0
    assert index["counts"]["videos_skipped"] == len(expected)


def _bad_paths(root: Path) -> dict[str, str]:
    out = {}
    for p in (root / "train").rglob("*"):
        for name, words in KINDS.values():
            if p.name == name:
                out[str(p.relative_to(root))] = words
    return out


def test_every_bad_kind_is_skipped_and_reported_exit_3(all_bad, tmp_path):
    """The real command in a subprocess: exit status 3, good clips intact and correct."""
    out = tmp_path / "out"
    proc = run_command([all_bad, out, "-T", T, "--layout", "clips", "-S", "3", "--workers", "2", "--no-progress"])
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    bad = _bad_paths(all_bad)
    assert len(bad) == len(KINDS)
    _check_report(out, bad)
    for path in bad:
        assert path in proc.stdout  # the summary names each skipped video
    want = reference_dataset(all_bad, frames_per_clip=T, step_between_clips=3, exclude=set(bad))
    assert len(want) == 7
    assert_same_clips(read_shards(out / "train"), want)


def test_strict_refuses_exit_4_and_writes_no_index(all_bad, tmp_path):
    out = tmp_path / "out"
    proc = run_command([all_bad, out, "-T", T, "--layout", "clips", "--strict", "--workers", "1", "--no-progress"])
    assert proc.returncode == EXIT_STRICT, proc.stderr
    assert "strict" in proc.stderr
    assert not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_bad_kind(kind, tmp_path):
    root = tmp_path / "ds"
    _good(root)
    name, words = KINDS[kind]
    make_bad(kind, root / "train" / "m_bad" / name, tmp_path / "scratch")
    rel = f"train/m_bad/{name}"
    out = tmp_path / "out"
    assert run_cli(root, out, "-T", T, "--layout", "clips", "--workers", "1", "--no-progress", "-q") == EXIT_SKIPPED
    _check_report(out, {rel: words})
    index = json.loads((out / "train" / "index.json").read_bytes())
    assert index["classes"] == ["a_good", "m_bad", "z_good"]  # the bad video's class keeps its label
    assert_same_clips(read_shards(out / "train"), reference_dataset(root, frames_per_clip=T, exclude={rel}))

    strict_out = tmp_path / "strict"
    assert run_cli(root, strict_out, "-T", T, "--layout", "clips", "--workers", "1", "--no-progress", "-q", "--strict",
                   "--shard-size", "20KB") == EXIT_STRICT
    assert not (strict_out / "train" / "index.json").exists()
    assert not [p for p in strict_out.rglob("*") if p.is_file()]  # no shard, marker or report left


def test_all_good_exit_0(tmp_path):
    _good(tmp_path / "ds")
    assert run_cli(tmp_path / "ds", tmp_path / "out", "-T", T, "--layout", "clips", "--workers", "1", "--no-progress",
                   "-q", "--strict") == 0
    assert (tmp_path / "out" / "train" / "index.json").exists()


def test_exit_statuses_are_documented():
    from clipshards.convert import cli

    for words in ("3 converted, but some videos were skipped", "4 --strict", "2 bad arguments"):
        assert words in cli.EXIT_STATUS_HELP
        assert words.split(" ", 1)[0] in cli.__doc__


def test_unexpected_decoder_error_skips_that_video_only(tmp_path, monkeypatch):
    """An exception the decoder was not written for costs one video, not the run."""
    import clipshards.convert.worker as worker

    root = tmp_path / "ds"
    _good(root)
    write_video(root / "train" / "m_bad" / "odd.mp4", VideoSpec(frames=12, seed=3))
    real = worker.iter_clips

    def failing(path, **kw):
        if path.endswith("odd.mp4"):
            raise RuntimeError("simulated decoder failure")
        return real(path, **kw)

    monkeypatch.setattr(worker, "iter_clips", failing)
    out = tmp_path / "out"
    assert run_cli(root, out, "-T", T, "--layout", "clips", "--workers", "1", "--no-progress", "-q") == EXIT_SKIPPED
    _check_report(out, {"train/m_bad/odd.mp4": "decoder error: RuntimeError: simulated decoder failure"})
    assert_same_clips(read_shards(out / "train"), reference_dataset(root, frames_per_clip=T, exclude={"train/m_bad/odd.mp4"}))


def test_the_plan_reads_headers_unless_dry_run_or_strict(tmp_path):
    """A normal run's plan takes the frame count the container declares (no pass over the
    file); a dry or strict run counts every packet. A file cut short shows the difference."""
    from clipshards.convert.decode import probe

    cut = tmp_path / "cut_fast.mp4"
    make_bad("truncated_mp4_faststart", cut, tmp_path / "scratch")
    declared = probe(str(cut), count_packets=False)
    assert declared.packets == declared.declared_frames == 60
    counted = probe(str(cut))
    assert counted.packets < declared.packets
    good = tmp_path / "good.mp4"
    write_video(good, VideoSpec(frames=37, seed=9))
    assert probe(str(good), count_packets=False).packets == probe(str(good)).packets == 37
