"""clipshards benchmark harness: ``python -m benchmarks.run`` (see ``--help``).

It builds its own Kinetics-like dataset, converts it and measures the loader, the converter,
the time to the first batch and peak memory against torchvision-style baselines, then writes
a Markdown table and a PNG chart to ``benchmarks/results/``.
"""

__all__: list[str] = []
