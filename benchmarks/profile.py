"""``python -m benchmarks.profile``: where the CPU goes in the paths whose gap to a limit remains.

Runs each scenario under ``py-spy record --native --subprocesses`` (``pip install py-spy``;
it needs ptrace, as root or with ``kernel.yama.ptrace_scope=0``), drops the samples of threads
that wait (locks, queues, the GIL, condition variables), and sorts the rest into what they do:
video decoding, colour conversion, audio, JPEG, hashing, copies, read/write system calls,
Python. Each sample's category is that of the frame nearest the leaf that names one (an
unnamed libc address inside ``os.write`` is the write; inside a NumPy copy, a copy). Writes
``benchmarks/results/profiles.md``. Scenarios use the harness's sets (run ``python -m
benchmarks.run`` once first): the converter on the 40-video subset with 1 and 2 workers, raw
and JPEG; the loader's raw epoch with 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["CATEGORIES", "categorize", "summarize", "main"]

WAIT = "waiting"
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (WAIT, ("pthread_cond_timedwait", "pthread_cond_wait", "PyThread_acquire_lock_timed", "sem_wait", "sem_timedwait",
            "take_gil", "epoll_wait", "select (", "poll (", "Condition.wait", "__futex", "futex_wait", "sleep (",
            "accept (", "recv (", "os_waitpid", "waitpid")),
    ("video decoding (libavcodec)", ("VideoStream_decode", "h264", "libavcodec")),
    ("colour conversion, scaling (libswscale)", ("libswscale", "sws_", "VideoFrame_reformat", "reformat")),
    ("audio decoding, resampling", ("AudioStream_decode", "libswresample", "AudioResampler", "swr_")),
    ("JPEG encoding or decoding", ("jpeg", "Jpeg", "JPEG", "simplejpeg", "ImagingEncode", "jsimd", "encode_mcu",
                                   "JpegImagePlugin.py", "PIL/ImageFile.py", "encode_jpeg (convert/schema.py")),
    ("hashing (XXH3, SHA-256)", ("XXH", "xxh", "sha256", "SHA256", "sha2", "hashlib")),
    ("read/write system calls", ("os_write", "os_pwrite", "os_preadv", "os_pread", "os_read", "write (libc", "pwrite",
                                 "preadv", "pread64", "read (libc", "_ShardFile._write_all", "fsync", "copy_file_range")),
    ("memory copies (NumPy, torch, buffers)", ("memmove", "memcpy", "raw_array_assign", "_contig_to_contig",
                                               "PyArray_Concatenate", "PyArray_AssignArray", "copy_kernel", "cpu_kernel",
                                               "stack", "cat_", "_aligned_contig", "memset", "clear_page")),
    ("page faults, mapping (mmap, madvise)", ("mmap", "munmap", "madvise", "page_fault")),
    ("memory allocation (malloc, new)", ("malloc", "operator new", "free (", "PyMem_", "_int_free")),
    ("Python garbage collection", ("gc_collect",)),
]
PYTHON = "Python (interpreter, glue)"
STARTUP = "start-up and exit (imports, the final collection)"
_STARTUP_MARKS = ("_find_and_load", "exec_module", "_call_with_frames_removed")


def categorize(stack: list[str]) -> str:
    """The category of one sample: start-up when any frame is an import (or it is the collection
    at exit, below no Python frame); else that of the frame nearest the leaf naming one; else Python."""
    if any(m in frame for frame in stack for m in _STARTUP_MARKS) or (
            any("gc_collect" in frame for frame in stack) and not any(".py:" in frame for frame in stack)):
        return STARTUP
    for frame in reversed(stack):
        if frame.startswith(("process ", "thread ")):  # the command line may name anything ("--codec jpeg")
            continue
        python = ".py:" in frame  # a Python function: only qualified names ("Condition.wait") mark it,
        for name, marks in CATEGORIES:  # not substrings of native symbols ("stack" in ``_stack``)
            if any(m in frame for m in marks if not python or "." in m):
                return name
    return PYTHON


def summarize(raw_path: str) -> tuple[Counter, int]:
    """``(CPU samples per category, samples waiting)`` of a py-spy ``-f raw`` file (start-up
    samples under :data:`STARTUP`, apart from the shares)."""
    cats: Counter = Counter()
    for line in open(raw_path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, count = line.rsplit(" ", 1)
        cats[categorize(stack.split(";"))] += int(count)
    waiting = cats.pop(WAIT, 0)
    return cats, waiting


def _work() -> str:
    return os.environ.get("CLIPSHARDS_BENCH_WORK", os.path.join(os.path.dirname(__file__), "work"))


def scenarios(work: str, tmp: str) -> dict[str, list[str]]:
    """Name -> command of each profiled run (the harness's own sets)."""
    sub = os.path.join(work, "subset_40")
    py = sys.executable
    conv = [py, "-m", "clipshards.convert", sub, "", "--frames-per-clip", "16", "--step-between-clips", "16",
            "--yes", "--no-progress", "--layout", "clips"]

    def convert(codec: str, workers: int) -> list[str]:
        cmd = list(conv)
        cmd[4] = os.path.join(tmp, f"conv_{codec}_{workers}")
        return cmd + ["--codec", codec, "--workers", str(workers)]

    loader = [py, "-c", "import sys, torch; from clipshards.loader import StreamingKinetics as S; "
              "ds = S(sys.argv[1], 'train', shuffle=True, seed=0); w = int(sys.argv[2]); "
              "[None for _ in range(8) for _b in ds.loader(batch_size=8, num_workers=w)]",
              os.path.join(work, "converted_raw")]
    return {
        "converter raw, 1 worker": convert("raw", 1),
        "converter raw, 2 workers": convert("raw", 2),
        "converter jpeg, 2 workers": convert("jpeg", 2),
        "loader raw, 0 workers (8 epochs, batch 8)": loader + ["0"],
        "loader raw, 2 workers (8 epochs, batch 8)": loader + ["2"],
    }


def profile(cmd: list[str], raw_path: str, rate: int) -> float:
    """Run ``cmd`` under py-spy; returns its wall time."""
    for attempt in (1, 2):  # py-spy's native unwinding itself crashes now and then (SIGSEGV): once more
        start = time.perf_counter()
        done = subprocess.run(["py-spy", "record", "--native", "--subprocesses", "-r", str(rate), "-f", "raw", "-o",
                               raw_path, "--", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if done.returncode == 0:
            return time.perf_counter() - start
        logger.warning("py-spy exited with %d (attempt %d): %s", done.returncode, attempt, " ".join(cmd))
    raise RuntimeError(f"py-spy failed twice on: {' '.join(cmd)}")


def report(results: dict[str, tuple[Counter, int, float]]) -> str:
    names = [n for n, _ in CATEGORIES if n != WAIT] + [PYTHON]
    lines = ["## Where the CPU goes (py-spy, native frames)", "",
             "Command: `python -m benchmarks.profile` (py-spy record --native --subprocesses; samples of waiting "
             "threads and of start-up imports left out). Share of the CPU samples of each run, every process and "
             "thread together. py-spy slows what it samples (the wall times below are not the benchmark's).", "",
             "| What | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for name in names:
        cells = []
        for cats, _, _ in results.values():
            total = sum(v for k, v in cats.items() if k != STARTUP) or 1
            cells.append(f"{100 * cats.get(name, 0) / total:.1f}%")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| (samples: CPU / start-up / waiting) | " + " | ".join(
        f"{sum(v for k, v in c.items() if k != STARTUP)} / {c.get(STARTUP, 0)} / {w}" for c, w, _ in results.values()) + " |")
    lines.append("| (wall time under py-spy) | " + " | ".join(f"{s:.1f} s" for _, _, s in results.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"), help="folder for profiles.md")
    p.add_argument("--work", default=_work(), help="the harness's cache of sets [benchmarks/work]")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second [250]")
    p.add_argument("--only", default="", help="comma-separated substrings of the scenario names to run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which("py-spy") is None:
        p.error("py-spy is not installed (pip install py-spy)")
    for need in ("subset_40", "converted_raw"):
        if not os.path.isdir(os.path.join(args.work, need)):
            p.error(f"{os.path.join(args.work, need)} is missing: run python -m benchmarks.run once first")
    results: dict[str, tuple[Counter, int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="clipshards-profile-") as tmp:
        for name, cmd in scenarios(args.work, tmp).items():
            if args.only and not any(s in name for s in args.only.split(",")):
                continue
            raw_path = os.path.join(tmp, "samples.txt")
            seconds = profile(cmd, raw_path, args.rate)
            cats, waiting = summarize(raw_path)
            results[name] = (cats, waiting, seconds)
            logger.info("%s: %.1f s, %d CPU samples; %s", name, seconds, sum(cats.values()),
                        json.dumps({k: v for k, v in cats.most_common(4)}))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "profiles.md"), "w", encoding="utf-8") as fh:
        fh.write(report(results))
    logger.info("wrote %s", os.path.join(args.out, "profiles.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
