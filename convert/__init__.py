"""clipshards.convert: turn a torchvision-layout video dataset into WebDataset clip shards.

The public names load their modules on first use (PEP 562): a converter worker process,
which imports only the decoding and encoding modules, then starts without the run's
progress bars, tools and their imports (about 0.1 s less per spawned worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .api import convert
    from .options import ConvertOptions, load_config
    from .report import ConvertReport, VideoRecord
    from .inspection import inspect_output
    from .output import read_clip
    from .preview import PreviewResult, preview_clip
    from .verify import VerifyResult, verify_output

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

_HOME = {
    "convert": ".api",
    "ConvertOptions": ".options",
    "load_config": ".options",
    "ConvertReport": ".report",
    "VideoRecord": ".report",
    "inspect_output": ".inspection",
    "verify_output": ".verify",
    "VerifyResult": ".verify",
    "read_clip": ".output",
    "preview_clip": ".preview",
    "PreviewResult": ".preview",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
