"""clipshards.loader: stream clip shards as torchvision's (video, audio, label) tuples."""

from .arguments import ERROR_POLICIES
from .collate import ClipBatch, collate_clips
from .dataloader import ClipLoader
from .datasets import StreamingKinetics
from .index import DatasetIndex, ShardEntry
from .indexed import IndexedKinetics
from .options import TransportOptions
from .plan import EpochPlan
from .progress import EpochProgress
from .reader import ShardReadError
from .retry import TransportError
from .transport import Transport
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
    "EpochProgress",
    "ShardReadError",
    "ERROR_POLICIES",
    "Transport",
    "TransportOptions",
    "TransportError",
]
