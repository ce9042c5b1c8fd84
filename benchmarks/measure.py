"""Timing statistics and peak-memory probes shared by the benchmark sections."""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

__all__ = ["Stat", "repeat", "Timer", "peak_rss_mib", "vm_hwm_mib", "children_pids", "run_python", "REPO"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Stat:
    """A measurement repeated ``len(values)`` times: the median is reported, min..max is the spread."""

    values: list[float] = field(default_factory=list)
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent."""
        m = self.median
        return 100.0 * (self.high - self.low) / m if m else float("nan")

    def fmt(self, digits: int = 3) -> str:
        if not self.values:
            return "n/a"
        m = _sig(self.median, digits)
        if len(self.values) == 1:
            return f"{m} {self.unit}".strip()
        return f"{m} {self.unit} ({_sig(self.low, digits)}-{_sig(self.high, digits)})".replace("  ", " ")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "median": self.median, "min": self.low, "max": self.high}

    @classmethod
    def of(cls, values: Sequence[float], unit: str = "") -> "Stat":
        return cls([float(v) for v in values], unit)

    def scaled(self, factor: float, unit: str) -> "Stat":
        return Stat([v * factor for v in self.values], unit)


def _sig(x: float, digits: int) -> str:
    if x != x:
        return "n/a"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def repeat(fn: Callable[[], float], times: int) -> list[float]:
    """Call ``fn`` ``times`` times (after a garbage collection each) and return its results."""
    out = []
    for _ in range(times):
        gc.collect()
        out.append(fn())
    return out


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` where there is ``/proc``: unlike ``ru_maxrss`` it starts afresh at ``exec``, so a
    process started by a big parent does not report the parent's size.
    """
    hwm = vm_hwm_mib(os.getpid())
    if hwm == hwm:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_kib(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def vm_hwm_mib(pid: int) -> float:
    """Peak RSS (``VmHWM``) of a live process, in MiB; NaN when it is gone."""
    return _status_kib(pid, "VmHWM") / 1024.0


def children_pids(pid: int | None = None) -> list[int]:
    """Direct child processes of ``pid`` (default: this process), from ``/proc``."""
    pid = pid or os.getpid()
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(p) for p in fh.read().split())
    except OSError:
        pass
    return sorted(set(out))


def run_python(module: str, args: dict[str, Any], *, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m module JSON`` in a fresh interpreter and parse its last stdout line as JSON.

    Used where a measurement needs a clean process: peak memory, time to the first batch.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", module, json.dumps(args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"{module} printed no result; stderr:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])
