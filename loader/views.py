"""Multi-view evaluation: per-clip predictions turned into per-video accuracy, every view counted once.

The test recipe of SlowFast, mmaction2 and PyTorchVideo: K uniformly spaced clips ("views")
of every video, the model's scores averaged per video, the video's class the argmax. Items
carry their ``video_idx`` and ``clip_idx`` (``with_ids=True`` on
:class:`~clipshards.loader.IndexedKinetics` or :class:`~clipshards.loader.StreamingKinetics`,
as torchvision's ``KineticsWithVideoId``); :func:`collate_views` batches them; a
:class:`VideoAccuracy` accumulates the scores. Under DDP each rank sees its share of the views
(``EvalDistributedSampler``, or ``StreamingKinetics(clips_per_video=K, clip_sampling="uniform")``):
the ranks are padded to equal length with repeats marked ``video_idx = -1``, which
:meth:`VideoAccuracy.update` masks out, and :meth:`VideoAccuracy.compute` sums the scores over
the ranks, so every view counts exactly once, however the views divide among the ranks.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch

from .collate import collate_clips

__all__ = ["ViewBatch", "collate_views", "VideoAccuracy", "AVERAGES"]

AVERAGES = ("prob", "score")


class ViewBatch(NamedTuple):
    """A batch of ``(video, audio, label, video_idx, clip_idx)`` items: :class:`~clipshards.loader.ClipBatch`'s
    five tensors, each item's ``video_idx`` and ``clip_idx`` (int64 ``[B]``), and ``valid``: bool
    ``[B]``, False for the repeats that only even out the ranks (``video_idx`` -1)."""

    video: torch.Tensor
    audio: torch.Tensor
    label: torch.Tensor
    audio_lengths: torch.Tensor
    audio_channels: torch.Tensor
    video_idx: torch.Tensor
    clip_idx: torch.Tensor
    valid: torch.Tensor


def collate_views(samples: Sequence[tuple[Any, ...]]) -> ViewBatch:
    """``collate_fn`` for items with ids: :func:`~clipshards.loader.collate_clips` of their
    ``(video, audio, label)``, and their ids."""
    for i, s in enumerate(samples):
        if not isinstance(s, (tuple, list)) or len(s) != 5:
            raise ValueError(f"sample {i} of the batch is not a (video, audio, label, video_idx, clip_idx) item: "
                             "give the dataset with_ids=True")
    clips = collate_clips([s[:3] for s in samples])
    video_idx = torch.tensor([int(s[3]) for s in samples], dtype=torch.int64)
    clip_idx = torch.tensor([int(s[4]) for s in samples], dtype=torch.int64)
    return ViewBatch(*clips, video_idx, clip_idx, video_idx >= 0)


class VideoAccuracy:
    """Per-video accuracy from per-clip (per-view) predictions.

    ``num_videos``: how many videos the ``video_idx`` of the items count (``len(ds.clips_per_video)``);
    ``average``: ``"prob"`` averages each video's softmax probabilities (SlowFast, mmaction2's
    ``average_clips="prob"``), ``"score"`` its raw scores. ``views_per_video`` (optional): the
    views each video must receive; :meth:`compute` then refuses a video counted more or less
    often. Scores are kept in float64, one row a video.
    """

    def __init__(self, num_videos: int, num_classes: int, *, average: str = "prob", topk: Sequence[int] = (1, 5),
                 views_per_video: Optional[Sequence[int] | torch.Tensor] = None) -> None:
        for name, value in (("num_videos", num_videos), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        if average not in AVERAGES:
            raise ValueError(f"average={average!r}: must be one of {AVERAGES}")
        if not topk or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k for k in topk):
            raise ValueError(f"topk={topk!r}: must be integers >= 1")
        self.num_classes, self.average, self.topk = num_classes, average, tuple(topk)
        self.scores = torch.zeros(num_videos, num_classes, dtype=torch.float64)
        self.views = torch.zeros(num_videos, dtype=torch.int64)
        self.labels = torch.full((num_videos,), -1, dtype=torch.int64)
        self.clip_correct = torch.zeros(1, dtype=torch.int64)
        self.expected = None if views_per_video is None else torch.as_tensor(views_per_video, dtype=torch.int64)
        if self.expected is not None and self.expected.shape != (num_videos,):
            raise ValueError(f"views_per_video: one count a video expected ({num_videos}), got shape {tuple(self.expected.shape)}")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, video_idx: torch.Tensor,
               valid: Optional[torch.Tensor] = None) -> None:
        """Add a batch of views: ``logits`` ``[B, C]``, ``labels`` and ``video_idx`` ``[B]``; views
        with ``video_idx`` -1 (padding) or ``valid`` False are left out."""
        logits = logits.detach().to("cpu", torch.float64)
        labels, video_idx = labels.detach().cpu().long(), video_idx.detach().cpu().long()
        b = (logits.shape[0],)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or labels.shape != b or video_idx.shape != b:
            raise ValueError(f"expected logits [B, {self.num_classes}] and labels, video_idx [B]; got "
                             f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(video_idx.shape)}")
        keep = video_idx >= 0
        if valid is not None:
            keep &= valid.detach().cpu().bool()
        logits, labels, video_idx = logits[keep], labels[keep], video_idx[keep]
        if video_idx.numel() and int(video_idx.max()) >= self.views.numel():
            raise ValueError(f"video_idx {int(video_idx.max())} is beyond num_videos={self.views.numel()}")
        known = self.labels[video_idx]
        if bool(((known >= 0) & (known != labels)).any()):
            raise ValueError("two views of one video carry different labels")
        scores = logits.softmax(dim=1) if self.average == "prob" else logits
        self.scores.index_add_(0, video_idx, scores)
        self.views.index_add_(0, video_idx, torch.ones_like(video_idx))
        self.labels[video_idx] = labels
        self.clip_correct += int((logits.argmax(dim=1) == labels).sum())

    def compute(self) -> dict[str, Any]:
        """Video-level top-k accuracies (``"top1"``, ``"top5"``, ...) over the videos that got a
        view, the clip-level top-1 (``"clip_top1"``), and the counts. Under an initialised
        ``torch.distributed`` group the ranks' sums are added first (every rank gets the result)."""
        scores, views, labels, correct = self.scores.clone(), self.views.clone(), self.labels.clone(), self.clip_correct.clone()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for t in (scores, views, correct):
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
            dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        if self.expected is not None and not torch.equal(views, self.expected):
            bad = int(torch.nonzero(views != self.expected)[0, 0])
            raise ValueError(f"video {bad} got {int(views[bad])} views, {int(self.expected[bad])} expected: "
                             "a view was counted twice or missed")
        seen = views > 0
        out: dict[str, Any] = {"videos": int(seen.sum()), "views": int(views.sum())}
        ranked = scores[seen].argsort(dim=1, descending=True)
        for k in self.topk:
            hits = (ranked[:, :k] == labels[seen][:, None]).any(dim=1)
            out[f"top{k}"] = float(hits.double().mean()) if hits.numel() else 0.0
        out["clip_top1"] = float(correct) / out["views"] if out["views"] else 0.0
        out["predictions"] = torch.where(seen, scores.argmax(dim=1), torch.full_like(labels, -1))
        return out
