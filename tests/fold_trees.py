"""Tiny UCF101-like and HMDB51-like trees, with their annotation files, for the fold tests.

Both are ``ROOT/<class>/<video>.avi`` (DivX-style MPEG-4 Part 2 in AVI, mostly with MP3
audio, as the real datasets) with what the real files hold and torchvision's rules must
handle: list entries missing from disk, videos no list names, ``.mp4`` files that are not
videos of these datasets (one of them listed), a nested folder, an upper-case ``.AVI``, a video
listed both as train and test, CRLF line endings and a trailing blank line; for HMDB51 the
unused tag 0, a base name shared by two classes, and a ``*test_split10.txt`` that fold 1's
pattern must not take.
"""

from __future__ import annotations

from pathlib import Path

from clipshards.convert.synth import VideoSpec, write_video

T, S = 4, 3
"""frames_per_clip, step_between_clips of the fold tests' conversions."""


def _avi(frames: int, seed: int, audio: str | None = "mp3") -> VideoSpec:
    return VideoSpec(frames=frames, fps=25, width=32, height=24, codec="mpeg4", audio_codec=audio,
                     sample_rate=22050, channels=1 if seed % 2 else 2, seed=seed)


UCF_VIDEOS = {
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": _avi(12, 1),
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi": _avi(14, 2),
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi": _avi(10, 3),  # no list names it
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g04_c01.mp4": VideoSpec(frames=12, seed=4),  # listed, but not a video here
    "Archery/v_Archery_g01_c01.avi": _avi(16, 5),
    "Archery/v_Archery_g02_c01.avi": _avi(11, 6, audio="pcm_s16le"),
    "Archery/nested/v_Archery_g03_c01.avi": _avi(13, 7),
    "Basketball/v_Basketball_g01_c01.avi": _avi(13, 8, audio=None),
    "Basketball/v_Basketball_g02_c01.AVI": _avi(15, 9),
    "Basketball/v_Basketball_g03_c01.avi": _avi(3, 10),  # too short for a clip: converted with none
}
_A, _B, _C = "ApplyEyeMakeup/v_ApplyEyeMakeup", "Archery/v_Archery", "Basketball/v_Basketball"
UCF_LISTS = {
    "trainlist01.txt": [f"{_A}_g01_c01.avi 1", f"{_A}_g04_c01.mp4 1", f"{_B}_g01_c01.avi 2", f"{_B}_g02_c01.avi 2",
                        f"{_C}_g01_c01.avi 3", f"{_C}_g09_c01.avi 3", f"{_C}_g03_c01.avi 3"],
    "testlist01.txt": [f"{_A}_g02_c01.avi", "Archery/nested/v_Archery_g03_c01.avi", f"{_C}_g02_c01.AVI"],
    "trainlist02.txt": [f"{_A}_g02_c01.avi 1", f"{_B}_g02_c01.avi 2", "Archery/nested/v_Archery_g03_c01.avi 2",
                        f"{_C}_g02_c01.AVI 3"],
    "testlist02.txt": [f"{_A}_g01_c01.avi", f"{_B}_g01_c01.avi", f"{_C}_g01_c01.avi", "Missing/v_Missing_g01_c01.avi"],
    "trainlist03.txt": [f"{_B}_g01_c01.avi 2", f"{_C}_g01_c01.avi 3", f"{_A}_g01_c01.avi 1"],
    "testlist03.txt": [f"{_A}_g01_c01.avi", f"{_A}_g02_c01.avi", f"{_B}_g02_c01.avi"],  # g01: train and test
}

HMDB_VIDEOS = {
    "brush_hair/April_brush_hair_u_nm_np1_ba_goo_0.avi": _avi(12, 11),
    "brush_hair/April_brush_hair_u_nm_np1_ba_goo_1.avi": _avi(10, 12),
    "brush_hair/Blonde_brush_hair_f_nm_np2_le_med_0.avi": _avi(14, 13),  # no file names it
    "brush_hair/clip_brush_hair.mp4": VideoSpec(frames=12, seed=14),  # listed, but not a video here
    "cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi": _avi(16, 15),
    "cartwheel/shared_name.avi": _avi(11, 16),
    "chew/Chew_chew_h_nm_np1_fr_goo_0.avi": _avi(13, 17, audio="pcm_s16le"),
    "chew/shared_name.avi": _avi(9, 18),  # same base name as cartwheel's: torchvision matches by base name
}
HMDB_LISTS = {
    "brush_hair_test_split1.txt": ["April_brush_hair_u_nm_np1_ba_goo_0.avi 1", "April_brush_hair_u_nm_np1_ba_goo_1.avi 2",
                                   "clip_brush_hair.mp4 1", "Gone_brush_hair_u_nm_np1_ba_goo_9.avi 1"],
    "brush_hair_test_split2.txt": ["April_brush_hair_u_nm_np1_ba_goo_0.avi 2", "April_brush_hair_u_nm_np1_ba_goo_1.avi 0"],
    "brush_hair_test_split3.txt": ["April_brush_hair_u_nm_np1_ba_goo_0.avi 0", "April_brush_hair_u_nm_np1_ba_goo_1.avi 1"],
    "cartwheel_test_split1.txt": ["Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 2", "shared_name.avi 1"],
    "cartwheel_test_split2.txt": ["Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 1", "shared_name.avi 2"],
    "cartwheel_test_split3.txt": ["Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 1", "shared_name.avi 0"],
    "chew_test_split1.txt": ["Chew_chew_h_nm_np1_fr_goo_0.avi 0"],
    "chew_test_split2.txt": ["Chew_chew_h_nm_np1_fr_goo_0.avi 1"],
    "chew_test_split3.txt": ["Chew_chew_h_nm_np1_fr_goo_0.avi 2", "shared_name.avi 2"],
    "old_test_split10.txt": ["Chew_chew_h_nm_np1_fr_goo_0.avi 1"],  # fold 10: not fold 1's file
}


def _write_lists(ann: Path, lists: dict[str, list[str]], *, crlf: str = "") -> None:
    ann.mkdir(parents=True, exist_ok=True)
    for name, lines in lists.items():
        newline = "\r\n" if name == crlf else "\n"
        # the real HMDB51 files end each line with a space; UCF101's train lists end with a blank line
        text = newline.join(lines) + newline
        (ann / name).write_bytes(text.encode("utf-8"))


def make_ucf101(base: Path) -> tuple[Path, Path]:
    """``(root, annotation folder)`` of the tiny UCF101-like dataset under ``base``."""
    root, ann = base / "UCF-101", base / "ucfTrainTestlist"
    for rel, spec in UCF_VIDEOS.items():
        write_video(root / rel, spec)
    lists = dict(UCF_LISTS)
    lists["trainlist01.txt"] = lists["trainlist01.txt"] + [""]
    _write_lists(ann, lists, crlf="testlist01.txt")
    (ann / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 Basketball\n", encoding="utf-8")
    return root, ann


def make_hmdb51(base: Path) -> tuple[Path, Path]:
    """``(root, annotation folder)`` of the tiny HMDB51-like dataset under ``base``."""
    root, ann = base / "hmdb51", base / "testTrainMulti_7030_splits"
    for rel, spec in HMDB_VIDEOS.items():
        write_video(root / rel, spec)
    _write_lists(ann, {name: [f"{line} " for line in lines] for name, lines in HMDB_LISTS.items()},
                 crlf="cartwheel_test_split2.txt")
    return root, ann
