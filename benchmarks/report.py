"""Results: per-section Markdown tables, a summary of the targets, a PNG chart and raw JSON."""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .measure import Stat

logger = logging.getLogger(__name__)

__all__ = ["Check", "Section", "markdown_table", "machine", "write_results"]

TABLE_NAME = "results.md"
CHART_NAME = "results.png"
JSON_NAME = "results.json"


@dataclass
class Check:
    """One target of the issue, as measured: ``met`` is None when it could not be measured."""

    target: str
    measured: str
    met: Optional[bool]


@dataclass
class Section:
    """One measured section: a table, notes, the targets it checks and data for the chart."""

    key: str
    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    chart: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        parts = [f"### {self.title}", "", markdown_table(self.headers, self.rows)]
        if self.notes:
            parts += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(parts)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, memory, OS and library versions, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
            mem = f", {kib / 1024 ** 2:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import av
    import numpy
    import PIL
    import torch

    try:
        import simplejpeg

        jpeg = f", simplejpeg {simplejpeg.__version__}"
    except ImportError:
        jpeg = ""

    return (
        f"{cpu}, {cores} cores{mem}; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, PyAV {av.__version__} (FFmpeg {_ffmpeg_version()}), numpy {numpy.__version__}, Pillow {PIL.__version__}{jpeg}"
    )


def _ffmpeg_version() -> str:
    import av

    try:
        v = av.library_versions["libavcodec"]
        return "libavcodec " + ".".join(str(x) for x in v)
    except Exception:  # pragma: no cover - depends on the PyAV build
        return "?"


def _summary(sections: Sequence[Section]) -> str:
    rows = []
    for s in sections:
        for c in s.checks:
            met = "n/a" if c.met is None else ("yes" if c.met else "**no**")
            rows.append([c.target, c.measured, met])
    return markdown_table(["Target (issue 5)", "Measured", "Met"], rows)


def render_markdown(sections: Sequence[Section], *, command: str, config: dict[str, Any], seconds: float,
                    conditions: str = "") -> str:
    head = [
        "## Benchmarks",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min). Machine: {machine()}." + (f" {conditions}" if conditions else ""),
        "",
        f"Dataset: {config['videos']} synthetic videos of {config['seconds']:g} s, {config['width']}x{config['height']}, "
        f"{config['fps']} fps, H.264 (GOP {config['gop']}, {config['bframes']} B-frames) with {config['sample_rate']} Hz stereo AAC; "
        f"clips of {config['frames_per_clip']} frames every {config['step_between_clips']} frames. "
        f"Figures are medians over {config['repeats']} runs ({config.get('convert_repeats', config['repeats'])} for the converter) with (min-max).",
        "",
        _summary(sections),
    ]
    body = [s.to_markdown() for s in sections]
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


def _chart(sections: Sequence[Section], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = [s for s in sections if s.chart]
    if not charts:
        return
    cols = min(2, len(charts))
    rows = -(-len(charts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(charts):]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, charts):
        c = s.chart
        labels, values = c["labels"], c["values"]
        lows = [v - lo for v, lo in zip(values, c.get("lows", values))]
        highs = [hi - v for v, hi in zip(values, c.get("highs", values))]
        colors = c.get("colors") or ["C0"] * len(values)
        ax.barh(range(len(values)), values, xerr=[lows, highs], color=colors, capsize=3)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        if c.get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(c.get("xlabel", ""))
        ax.set_title(s.title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README_SECTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README_SECTION.md")


def write_readme_section(table_md: str, path: str = README_SECTION) -> str:
    """The README's benchmark section: how to run the harness, then the latest results table."""
    intro = "\n".join([
        "## Benchmarks",
        "",
        "`python -m benchmarks.run` builds its own Kinetics-like dataset (cached in `benchmarks/work/`), converts it and "
        "measures the loader, the converter, the time to the first batch and peak memory against torchvision-style "
        "baselines; it writes `benchmarks/results/results.md` (these tables), `results.png` (chart) and `results.json`. "
        "`--quick` is a smoke run on a tiny dataset; `--help` lists the sizes and repeats.",
        "",
        "```bash",
        "pip install -e '.[plot]'",
        "python -m benchmarks.run            # full run, ~5-10 min on 2 cores",
        "python -m benchmarks.run --quick    # < 1 min",
        "```",
        "",
        "Latest results ([chart](benchmarks/results/results.png)):",
        "",
    ])
    body = table_md.split("\n", 2)[2] if table_md.startswith("## Benchmarks\n") else table_md
    body = body.replace("\n### ", "\n#### ")
    with open(path, "w") as fh:
        fh.write(intro + "\n" + body.lstrip("\n"))
    return path


def write_results(out: str, sections: Sequence[Section], *, command: str, config: dict[str, Any], seconds: float,
                  conditions: str = "") -> dict[str, str]:
    """Write ``results.md``, ``results.png`` and ``results.json`` into ``out``; returns their paths."""
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, n) for k, n in (("table", TABLE_NAME), ("chart", CHART_NAME), ("json", JSON_NAME))}
    with open(paths["table"], "w") as fh:
        fh.write(render_markdown(sections, command=command, config=config, seconds=seconds, conditions=conditions))
    _chart(sections, paths["chart"])
    raw = {
        "command": command, "machine": machine(), "conditions": conditions, "seconds": seconds, "config": config,
        "sections": {s.key: {"checks": [c.__dict__ for c in s.checks], "raw": s.raw} for s in sections},
    }
    with open(paths["json"], "w") as fh:
        json.dump(raw, fh, indent=1, default=_json_default)
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Stat):
        return obj.to_json()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def chart_data(items: Sequence[tuple[str, Stat, str]], *, xlabel: str, log: bool = False) -> dict[str, Any]:
    """Chart entries ``(label, stat, colour)`` as :func:`_chart` draws them."""
    return {
        "labels": [i[0] for i in items], "values": [i[1].median for i in items],
        "lows": [i[1].low for i in items], "highs": [i[1].high for i in items],
        "colors": [i[2] for i in items], "xlabel": xlabel, "log": log,
    }
