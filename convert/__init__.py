"""clipshards.convert: turn a torchvision-layout video dataset into WebDataset clip shards."""

from .api import convert
from .options import ConvertOptions, load_config
from .report import ConvertReport, VideoRecord

__all__ = ["convert", "ConvertOptions", "load_config", "ConvertReport", "VideoRecord"]
