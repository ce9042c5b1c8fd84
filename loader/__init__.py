"""clipshards.loader: stream clip shards as torchvision's (video, audio, label) tuples."""

from clipshards.convert.storage_errors import StorageError

from .arguments import ERROR_POLICIES
from .collate import ClipBatch, collate_clips
from .dataloader import ClipLoader
from .datasets import StreamingKinetics
from .fold_datasets import HMDB51, UCF101, StreamingHMDB51, StreamingUCF101
from .index import DatasetIndex, ShardEntry
from .indexed import IndexedKinetics
from .options import TransportOptions
from .plan import EpochPlan
from .progress import EpochProgress
from .reader import ShardReadError
from .retry import TransportError
from .samplers import DistributedSampler, EvalDistributedSampler, PaddedIndex, RandomClipSampler, UniformClipSampler
from .transforms import CenterCrop, Compose, RandomCrop, Resize
from .transport import Transport
from .views import VideoAccuracy, ViewBatch, collate_views
from .webdataset_pipeline import webdataset_pipeline

__all__ = [
    "StreamingKinetics",
    "IndexedKinetics",
    "UCF101",
    "HMDB51",
    "StreamingUCF101",
    "StreamingHMDB51",
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
    "StorageError",
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "Compose",
    "RandomClipSampler",
    "UniformClipSampler",
    "DistributedSampler",
    "EvalDistributedSampler",
    "PaddedIndex",
    "VideoAccuracy",
    "ViewBatch",
    "collate_views",
]
