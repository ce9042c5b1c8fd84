"""Argument checks the loader's entry points share (the datasets, :func:`webdataset_pipeline`).

Each bad value raises ``ValueError`` naming the argument, the value and what it must be, at
construction, so a typo fails before any shard is read (and never in a DataLoader worker).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from .plan import AUTO
from .reader import OUTPUT_FORMATS

__all__ = [
    "Transform",
    "ERROR_POLICIES",
    "check_output",
    "check_flag",
    "check_choice",
    "int_option",
    "check_errors",
    "check_rank",
    "resolve_rank",
]

ERROR_POLICIES = ("raise", "skip")
"""``errors=`` of :class:`~clipshards.loader.StreamingKinetics` (a webdataset handler is also accepted)."""

Transform = Callable[[torch.Tensor], Any]


def check_output(output_format: str, transform: Optional[Transform]) -> None:
    """``output_format`` is one of :data:`~clipshards.loader.reader.OUTPUT_FORMATS`; ``transform`` None or callable."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format={output_format!r}: must be one of {OUTPUT_FORMATS}")
    if transform is not None and not callable(transform):
        raise ValueError(f"transform={transform!r}: must be callable (it is applied to the video tensor)")


def check_flag(name: str, value: Any) -> bool:
    """``value`` checked: True or False (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be True or False")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` checked: one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {choices}")
    return value


def int_option(name: str, value: Any, minimum: int, *, allow_none: bool = False, auto: bool = False) -> Any:
    """``value`` checked: an integer >= ``minimum`` (or None / "auto" where allowed)."""
    if (value is None and allow_none) or (auto and isinstance(value, str) and value == AUTO):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        choices = (["'auto'"] if auto else []) + [f"an integer >= {minimum}"] + (["None"] if allow_none else [])
        raise ValueError(f"{name}={value!r}: must be {' or '.join(choices)}")
    return int(value)


def check_errors(errors: Any) -> None:
    """``errors`` is one of :data:`ERROR_POLICIES` or a webdataset handler (a callable)."""
    if not (callable(errors) or (isinstance(errors, str) and errors in ERROR_POLICIES)):
        raise ValueError(f"errors={errors!r}: must be one of {ERROR_POLICIES} or a webdataset handler "
                         "(a callable taking the ShardReadError, returning True to skip)")


def check_rank(rank: Any, world_size: Any) -> tuple[Optional[int], Optional[int]]:
    """``(rank, world_size)`` checked: each None or an integer (rank >= 0, world_size >= 1), rank < world_size."""
    world = int_option("world_size", world_size, 1, allow_none=True)
    checked = int_option("rank", rank, 0, allow_none=True)
    if checked is not None and world is not None and checked >= world:
        raise ValueError(f"rank={rank!r}: must be < world_size={world_size!r}")
    return checked, world


def resolve_rank(rank: Optional[int], world: Optional[int]) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else from ``torch.distributed`` when initialised, else (0, 1)."""
    if rank is None or world is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world = dist.get_world_size() if world is None else world
    world = 1 if world is None else world
    rank = 0 if rank is None else rank
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1} (world_size {world})")
    return rank, world
