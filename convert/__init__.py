"""clipshards.convert: turn a torchvision-layout video dataset into WebDataset clip shards."""

from .api import convert
from .options import ConvertOptions, load_config
from .report import ConvertReport, VideoRecord
from .tools import PreviewResult, VerifyResult, inspect_output, preview_clip, read_clip, verify_output

__all__ = [
    "convert",
    "ConvertOptions",
    "load_config",
    "ConvertReport",
    "VideoRecord",
    "inspect_output",
    "verify_output",
    "VerifyResult",
    "read_clip",
    "preview_clip",
    "PreviewResult",
]
