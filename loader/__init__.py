"""clipshards.loader: stream clip shards as torchvision's (video, audio, label) tuples."""

from .collate import ClipBatch, collate_clips
from .dataloader import ClipLoader
from .datasets import ERROR_POLICIES, IndexedKinetics, StreamingKinetics
from .index import DatasetIndex, ShardEntry
from .plan import EpochPlan
from .reader import ShardReadError
from .transport import Transport, TransportError, TransportOptions
from .webdataset_pipeline import webdataset_pipeline

__all__ = [
    "StreamingKinetics",
    "IndexedKinetics",
    "webdataset_pipeline",
    "ClipLoader",
    "collate_clips",
    "ClipBatch",
    "DatasetIndex",
    "ShardEntry",
    "EpochPlan",
    "ShardReadError",
    "ERROR_POLICIES",
    "Transport",
    "TransportOptions",
    "TransportError",
]
