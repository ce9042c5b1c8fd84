"""``clipshards example DIR``: the whole path on a dataset the project makes itself.

Writes a tiny Kinetics-layout dataset with PyAV, converts it (progress bar), then loads it
back with :class:`~clipshards.loader.StreamingKinetics` in a DataLoader and with
:class:`~clipshards.loader.IndexedKinetics`, and prints what came out.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from .api import convert
from .synth import VideoSpec, make_dataset

logger = logging.getLogger(__name__)

__all__ = ["ExampleResult", "run_example"]


@dataclass
class ExampleResult:
    root: str
    out: str
    clips: int
    batches: int
    seconds_convert: float
    seconds_load: float


def run_example(directory: str | os.PathLike, *, workers: int = 0, progress: bool = True) -> ExampleResult:
    """Make ``DIR/dataset``, convert it to ``DIR/shards`` and read it back; returns counts and times."""
    import torch

    from clipshards.loader import IndexedKinetics, StreamingKinetics, collate_clips

    directory = os.fspath(directory)
    root = os.path.join(directory, "dataset")
    out = os.path.join(directory, "shards")
    if not os.path.isdir(os.path.join(root, "train")):
        logger.info("writing a tiny dataset (3 classes x 3 videos, H.264 + AAC) to %s", root)
        make_dataset(root, videos_per_class=3, spec=VideoSpec(frames=48, width=96, height=72))
    t0 = time.perf_counter()
    # clips layout: one sample per clip, as notebooks/quickstart.ipynb shows it (overlapping clips such as these
    # get the videos layout by default); yes: our own tiny videos compress far better than real ones, so their
    # output may be 20x their size
    convert(
        root, out, frames_per_clip=16, step_between_clips=8, layout="clips", codec="jpeg", workers=workers,
        progress=progress, shard_size=1 << 20, yes=True,
    )
    t1 = time.perf_counter()

    ds = StreamingKinetics(out, "train", shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_clips)
    batches = 0
    for batch in loader:
        if batches == 0:
            print(
                f"first batch: video {tuple(batch.video.shape)} {batch.video.dtype}, "
                f"audio {tuple(batch.audio.shape)}, labels {batch.label.tolist()} "
                f"({', '.join(ds.classes[i] for i in batch.label.tolist())})"
            )
        batches += 1
    t2 = time.perf_counter()
    video, audio, label = IndexedKinetics(out, "train")[0]
    print(f"IndexedKinetics[0]: video {tuple(video.shape)}, audio {tuple(audio.shape)}, label {label}")
    print(f"{len(ds)} clips in {batches} batches; convert {t1 - t0:.1f} s, one epoch {t2 - t1:.1f} s")
    print(f"shards and index: {out}/train/  (try: clipshards inspect {out})")
    return ExampleResult(root, out, len(ds), batches, t1 - t0, t2 - t1)
