"""The converter's exceptions: what :func:`clipshards.convert.convert` raises besides ``ValueError``.

Defined below the pipeline's modules (not in :mod:`.api`) so that the stages that detect a
failure (packing samples, the main loop) raise them without importing upward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .report import EXIT_STRICT

if TYPE_CHECKING:  # pragma: no cover
    from .report import ConvertReport

__all__ = ["ConversionError", "StrictModeError", "OutputLocked", "OutputUnusable", "OutputTooLarge", "ConversionMismatch"]


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


class OutputTooLarge(ConversionError):
    """The plan's output is far larger than the input, or than the free space, and ``yes`` was
    not given: refused before anything is written (the message gives the sizes and what to change)."""

    exit_code = 2


class ConversionMismatch(ConversionError):
    """OUT already holds a conversion made with other options or input (the message names each
    option that differs, old and new); choose another OUT or overwrite it."""

    exit_code = 2
