"""clipshards inspect / verify / preview on small real conversions (local folders and S3 on moto)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipshards.convert import convert, inspect_output, preview_clip, read_clip, verify_output
from clipshards.convert.cli import main
from clipshards.convert.schema import INDEX_NAME, OFFSETS_NAME, checksum_of, decode_npy, dumps_json, entry_checksum
from clipshards.convert.synth import VideoSpec, write_video
from clipshards.convert.preview import _WAVE_COLORS
from clipshards.convert.tools import EXIT_DAMAGED

try:
    from servers import s3_server  # noqa: F401  (pytest fixture: moto server on 127.0.0.1)
except ImportError:  # pragma: no cover - tests/servers.py not in this checkout

    @pytest.fixture(scope="module")
    def s3_server():
        pytest.skip("tests/servers.py (the moto S3 server fixture) is not available")

# tiny_converted: 3 classes x videos of 30 and 37 frames, T=8, S=4, raw, one clip per shard
CLIPS = 3 * ((30 - 8) // 4 + 1 + (37 - 8) // 4 + 1)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def split_dir(out: Path) -> Path:
    return Path(out) / "train"


def load_index(out: Path) -> dict:
    return json.loads((split_dir(out) / INDEX_NAME).read_bytes())


@pytest.fixture()
def damaged_copy(tiny_converted, tmp_path) -> Path:
    """A private copy of tiny_converted that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_converted, dst)
    return dst


@pytest.fixture(scope="module")
def skipped_converted(tmp_path_factory) -> Path:
    """JPEG conversion of 2 classes where one video is too short and one is not a video."""
    root = tmp_path_factory.mktemp("skipped_ds")
    write_video(root / "train" / "cats" / "good.mp4", VideoSpec(frames=20, seed=1))
    write_video(root / "train" / "cats" / "short.mp4", VideoSpec(frames=5, seed=2))
    write_video(root / "train" / "dogs" / "silent.mp4", VideoSpec(frames=16, seed=3, audio_codec=None))
    (root / "train" / "dogs" / "broken.mp4").write_bytes(b"this is not a video file" * 10)
    out = tmp_path_factory.mktemp("skipped_out")
    convert(root, out, frames_per_clip=8, step_between_clips=8, codec="jpeg", workers=1, progress=False)
    return out


# -- inspect -------------------------------------------------------------------------------------


def test_inspect_json_reports_classes_shards_and_bytes(tiny_converted, capsys):
    rc, out, _ = run_cli(capsys, "inspect", tiny_converted, "--json")
    assert rc == 0
    info = json.loads(out)
    index = load_index(tiny_converted)
    assert info["split"] == "train"
    assert info["options"] == index["options"]
    assert info["options"]["frames_per_clip"] == 8 and info["options"]["step_between_clips"] == 4
    assert [c["name"] for c in info["classes"]] == ["archery", "bowling", "juggling balls"]
    assert [c["label"] for c in info["classes"]] == [0, 1, 2]
    assert [c["clips"] for c in info["classes"]] == [CLIPS // 3] * 3
    assert [c["videos"] for c in info["classes"]] == [2, 2, 2]
    assert info["counts"]["clips"] == CLIPS
    on_disk = {p.name: p.stat().st_size for p in split_dir(tiny_converted).glob("*.tar")}
    assert {s["name"]: s["bytes"] for s in info["shards"]} == on_disk
    assert info["shard_bytes"] == sum(on_disk.values())
    assert info["total_bytes"] == sum(on_disk.values()) + (split_dir(tiny_converted) / OFFSETS_NAME).stat().st_size
    assert info["skipped"] == [] and info["skipped_by_reason"] == {}


def test_inspect_text_is_readable_and_cut_for_long_lists(tiny_converted, capsys):
    rc, text, _ = run_cli(capsys, "inspect", tiny_converted)
    assert rc == 0
    assert "juggling balls" in text
    assert f"clips: {CLIPS} of 8 frames, step 4" in text
    assert "train-000000.tar" in text
    assert "more shards (--all lists them)" in text  # 42 shards: the text lists the first ones only
    assert f"train-{CLIPS - 1:06d}.tar" not in text
    rc, text_all, _ = run_cli(capsys, "inspect", tiny_converted, "--all")
    assert f"train-{CLIPS - 1:06d}.tar" in text_all


def test_inspect_lists_skipped_videos_with_reasons(skipped_converted, capsys):
    rc, text, _ = run_cli(capsys, "inspect", skipped_converted)
    assert rc == 0
    assert "skipped videos: 2" in text
    assert "train/cats/short.mp4: too short" in text
    assert "train/dogs/broken.mp4:" in text
    info = inspect_output(skipped_converted)
    assert {v["path"] for v in info["skipped"]} == {"train/cats/short.mp4", "train/dogs/broken.mp4"}
    assert all(v["reason"] for v in info["skipped"])
    assert info["skipped_by_reason"].get("too short") == 1
    by_name = {c["name"]: c for c in info["classes"]}
    assert by_name["cats"]["videos_skipped"] == 1 and by_name["dogs"]["videos_skipped"] == 1
    assert by_name["cats"]["clips"] == 2 and by_name["dogs"]["clips"] == 2


def test_inspect_accepts_a_split_folder_and_names_a_missing_split(tiny_converted, capsys):
    assert inspect_output(split_dir(tiny_converted))["counts"]["clips"] == CLIPS
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tiny_converted), "--split", "val"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "val" in err and INDEX_NAME in err


# -- verify --------------------------------------------------------------------------------------


def test_verify_passes_an_intact_output_and_decodes_every_clip(tiny_converted, capsys):
    rc, out, _ = run_cli(capsys, "verify", tiny_converted, "--decode", "all", "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["ok"] is True and res["bad_shards"] == {} and res["problems"] == []
    assert res["clips_decoded"] == CLIPS == res["clips"]
    total = sum(p.stat().st_size for p in split_dir(tiny_converted).glob("*.tar"))
    assert res["bytes_checked"] == total + (split_dir(tiny_converted) / OFFSETS_NAME).stat().st_size


def test_verify_decodes_jpeg_outputs(skipped_converted):
    res = verify_output(skipped_converted, decode="all")
    assert res.ok, res.summary()
    assert res.clips_decoded == res.clips == 4


def test_verify_decode_count_is_random_but_bounded(tiny_converted):
    assert verify_output(tiny_converted, decode=5, seed=1).clips_decoded == 5
    assert verify_output(tiny_converted, decode=0).clips_decoded == 0
    assert verify_output(tiny_converted, decode=10_000).clips_decoded == CLIPS
    for bad in (-1, "some", 1.5):
        with pytest.raises(ValueError, match="decode="):
            verify_output(tiny_converted, decode=bad)


def test_verify_names_a_shard_with_a_flipped_byte(damaged_copy, capsys):
    shard = split_dir(damaged_copy) / "train-000005.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the video payload: only the checksum can see it
    shard.write_bytes(bytes(data))
    rc, out, _ = run_cli(capsys, "verify", damaged_copy, "--decode", "0")
    assert rc == EXIT_DAMAGED
    assert "BAD train-000005.tar" in out and "XXH3-128 differs" in out
    res = verify_output(damaged_copy, decode=0)
    assert list(res.bad_shards) == ["train-000005.tar"]


def test_verify_names_a_truncated_shard(damaged_copy, capsys):
    shard = split_dir(damaged_copy) / "train-000011.tar"
    shard.write_bytes(shard.read_bytes()[:50_000])
    rc, out, _ = run_cli(capsys, "verify", damaged_copy, "--decode", "all", "--json")
    assert rc == EXIT_DAMAGED
    res = json.loads(out)
    assert list(res["bad_shards"]) == ["train-000011.tar"]
    problems = " ".join(res["bad_shards"]["train-000011.tar"])
    assert "truncated: 50000 bytes" in problems
    assert "clip 11 does not decode" in problems


def test_verify_names_a_missing_shard_and_a_damaged_offsets_file(damaged_copy, capsys):
    (split_dir(damaged_copy) / "train-000003.tar").unlink()
    offsets = split_dir(damaged_copy) / OFFSETS_NAME
    data = bytearray(offsets.read_bytes())
    data[-4] ^= 0x40
    offsets.write_bytes(bytes(data))
    rc, out, _ = run_cli(capsys, "verify", damaged_copy)
    assert rc == EXIT_DAMAGED
    assert "BAD train-000003.tar: missing" in out
    assert f"{OFFSETS_NAME}: XXH3-128 differs" in out


def test_verify_decode_catches_swapped_shards_with_matching_checksums(damaged_copy):
    """Two shards swapped, index checksums swapped to match: only decoding the clips
    (keys checked against the index) can see that the clips are in the wrong place."""
    d = split_dir(damaged_copy)
    a, b = d / "train-000001.tar", d / "train-000002.tar"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    index = load_index(damaged_copy)
    shards = index["shards"]
    algo = entry_checksum(shards[1])[0]
    assert algo == "xxh3_128"  # the default
    shards[1][algo], shards[2][algo] = checksum_of(algo, db), checksum_of(algo, da)
    (d / INDEX_NAME).write_bytes(dumps_json(index))
    assert verify_output(damaged_copy, decode=0).ok  # sizes and checksums agree
    res = verify_output(damaged_copy, decode="all")
    assert sorted(res.bad_shards) == ["train-000001.tar", "train-000002.tar"]
    assert "sample key" in res.bad_shards["train-000001.tar"][0]


def test_verify_rejects_offsets_that_do_not_tile_their_shard(damaged_copy):
    d = split_dir(damaged_copy)
    index = load_index(damaged_copy)
    offsets = decode_npy((d / OFFSETS_NAME).read_bytes()).copy()
    offsets[7, 1] -= 512
    from clipshards.convert.schema import encode_npy

    data = encode_npy(offsets)
    (d / OFFSETS_NAME).write_bytes(data)
    algo = entry_checksum(index["offsets"])[0]
    index["offsets"].update({"bytes": len(data), algo: checksum_of(algo, data)})
    (d / INDEX_NAME).write_bytes(dumps_json(index))
    res = verify_output(damaged_copy, decode="all")
    assert list(res.bad_shards) == ["train-000007.tar"]
    assert any("do not tile" in p for p in res.bad_shards["train-000007.tar"])


def test_verify_without_an_index_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(tmp_path)])
    assert exc.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err


# -- preview -------------------------------------------------------------------------------------

# Sheet layout for 8 frames of 64x48 at width 1280, 8 columns: margin 16, gap 8, so tiles are
# (1280 - 2*16 - 7*8) // 8 = 149 px wide and round(149 * 48/64) = 112 high; the title is 64 px,
# a row takes 112 + 20 (frame label) + 8, the waveform starts 8 px below, 64 + 84 px per channel.
TILE_W, TILE_H, GRID_TOP = 149, 112, 64
SHEET = (1280, 64 + (112 + 20 + 8) + 8 + (64 + 84 * 2) + 16)


@pytest.mark.parametrize("backend", ["matplotlib", "pillow"])
def test_preview_writes_a_contact_sheet_png(tiny_converted, tmp_path, capsys, backend):
    if backend == "matplotlib":
        pytest.importorskip("matplotlib")
    png = tmp_path / f"sheet-{backend}.png"
    rc, out, _ = run_cli(capsys, "preview", tiny_converted, "--index", "9", "--out", png, "--backend", backend)
    assert rc == 0 and str(png) in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == SHEET
        sheet = np.asarray(img.convert("RGB")).astype(np.int16)
    clip = read_clip(tiny_converted, index=9)
    for t in range(8):
        x = 16 + t * (TILE_W + 8)
        tile = Image.fromarray(sheet[GRID_TOP : GRID_TOP + TILE_H, x : x + TILE_W].astype(np.uint8))
        small = np.asarray(tile.resize((64, 48), Image.Resampling.BOX)).astype(np.int16)
        assert np.abs(small - clip["video"][t]).mean() < 12, f"frame {t} is not where the sheet puts it"
    wave = sheet[SHEET[1] - 16 - 232 :]
    for color in _WAVE_COLORS[:2]:  # one lane per channel, each in its own colour
        near = np.abs(wave - np.array(color)).sum(axis=-1) < 60
        assert near.sum() > 500


def test_preview_of_a_clip_without_audio_has_no_waveform(skipped_converted, tmp_path):
    info = inspect_output(skipped_converted)
    silent = next(c for c in info["classes"] if c["name"] == "dogs")
    first = sum(c["clips"] for c in info["classes"] if c["label"] < silent["label"])
    clip = read_clip(skipped_converted, index=first)
    assert clip["path"] == "train/dogs/silent.mp4" and clip["audio"].shape == (1, 0)
    res = preview_clip(skipped_converted, index=first, out=tmp_path / "silent.png", backend="pillow")
    tile_h = round(149 * 48 / 64)
    assert (res.width, res.height) == (1280, 64 + (tile_h + 20 + 8) + 8 + 56 + 16)
    with Image.open(res.path) as img:
        sheet = np.asarray(img.convert("RGB")).astype(np.int16)
    wave = sheet[res.height - 16 - 56 :]
    assert all((np.abs(wave - np.array(c)).sum(axis=-1) < 60).sum() == 0 for c in _WAVE_COLORS[:2])


def test_preview_names_a_clip_index_out_of_range(tiny_converted, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["preview", str(tiny_converted), "--index", str(CLIPS), "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert f"clip index {CLIPS}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="backend="):
        preview_clip(tiny_converted, index=0, out=tmp_path / "x.png", backend="svg")


def test_read_clip_matches_the_index(tiny_converted):
    index = load_index(tiny_converted)
    video = index["videos"][3]
    g = video["first_clip"] + 2
    clip = read_clip(tiny_converted, index=g)
    assert clip["label"] == video["label"] and clip["path"] == video["path"]
    assert clip["class_name"] == index["classes"][video["label"]]
    assert clip["meta"]["clip_index"] == 2 and clip["meta"]["frame_indices"] == list(range(8, 16))
    assert clip["video"].shape == (8, 48, 64, 3) and clip["video"].dtype == np.uint8
    assert clip["audio"].dtype == np.float32 and clip["audio"].shape[0] == 2


# -- object storage ------------------------------------------------------------------------------


def test_inspect_verify_preview_on_s3(tiny_converted, s3_server, tmp_path, capsys):
    """The three commands on s3:// through a moto server on 127.0.0.1, credentials as options."""
    import s3fs

    opts = s3_server.storage_options()
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    bucket = s3_server.make_bucket()
    fs.put(str(split_dir(tiny_converted)), f"{bucket}/conv/train", recursive=True)
    url = f"s3://{bucket}/conv"
    flags = [
        f"--storage-option=key={opts['key']}",
        f"--storage-option=secret={opts['secret']}",
        f"--storage-option=client_kwargs.endpoint_url={opts['client_kwargs']['endpoint_url']}",
        f"--storage-option=client_kwargs.region_name={opts['client_kwargs']['region_name']}",
    ]

    rc, out, _ = run_cli(capsys, "inspect", url, "--json", *flags)
    assert rc == 0 and json.loads(out)["counts"]["clips"] == CLIPS
    rc, out, _ = run_cli(capsys, "verify", url, "--decode", "all", "--json", *flags)
    assert rc == 0 and json.loads(out)["clips_decoded"] == CLIPS
    png = tmp_path / "s3.png"
    rc, _, _ = run_cli(capsys, "preview", url, "--index", "4", "--out", png, "--backend", "pillow", *flags)
    assert rc == 0
    with Image.open(png) as img:
        assert img.size == SHEET

    data = fs.cat_file(f"{bucket}/conv/train/train-000020.tar")
    fs.pipe_file(f"{bucket}/conv/train/train-000020.tar", data[:-2048])
    rc, out, err = run_cli(capsys, "verify", url, *flags)
    assert rc == EXIT_DAMAGED
    assert f"s3://{bucket}/conv/train: " in out and "BAD train-000020.tar: truncated" in out
    assert opts["secret"] not in out + err


def test_sha256_checksum_option_is_recorded_and_verified(tmp_path, capsys):
    """``checksum="sha256"``: the index records SHA-256 (equal to hashlib's) for every shard and
    for offsets.npy, ``verify`` checks it and names a damaged shard."""
    import hashlib

    root = tmp_path / "ds"
    write_video(root / "train" / "cats" / "a.mp4", VideoSpec(frames=20, seed=4))
    write_video(root / "train" / "dogs" / "b.mp4", VideoSpec(frames=20, seed=5))
    out = tmp_path / "out"
    convert(root, out, frames_per_clip=8, step_between_clips=8, shard_size=4096, checksum="sha256", workers=1, progress=False)
    index = load_index(out)
    assert index["options"]["checksum"] == "sha256" and len(index["shards"]) > 1
    for s in index["shards"]:
        assert "xxh3_128" not in s
        assert s["sha256"] == hashlib.sha256((split_dir(out) / s["name"]).read_bytes()).hexdigest()
    assert index["offsets"]["sha256"] == hashlib.sha256((split_dir(out) / OFFSETS_NAME).read_bytes()).hexdigest()
    assert verify_output(out, decode=0).ok
    shard = split_dir(out) / index["shards"][1]["name"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    rc, text, _ = run_cli(capsys, "verify", out, "--decode", "0")
    assert rc == EXIT_DAMAGED and f"BAD {shard.name}: SHA-256 differs" in text


def test_bad_checksum_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"checksum='md5': must be one of"):
        convert(tmp_path, tmp_path / "out", frames_per_clip=8, checksum="md5")
