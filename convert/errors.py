"""The converter's exceptions: what :func:`clipshards.convert.convert` raises besides ``ValueError``.

Defined below the pipeline's modules (not in :mod:`.api`) so that the stages that detect a
failure (packing samples, the main loop) raise them without importing upward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .report import EXIT_STRICT

if TYPE_CHECKING:  # pragma: no cover
    from .report import ConvertReport

__all__ = ["ConversionError", "StrictModeError", "OutputLocked", "OutputUnusable"]


class ConversionError(RuntimeError):
    """A conversion that cannot go on (output taken, write failed); ``exit_code`` for the CLI."""

    exit_code = 1


class StrictModeError(ConversionError):
    """``strict=True`` and some video could not be converted."""

    exit_code = EXIT_STRICT

    def __init__(self, message: str, report: "ConvertReport"):
        super().__init__(message)
        self.report = report


class OutputLocked(ConversionError):
    """Another run is writing this output (see :mod:`.lock`), or took it over from this run."""


class OutputUnusable(ConversionError):
    """OUT cannot hold the output at all (not a folder, read-only, no permission): a bad argument."""

    exit_code = 2
