"""Byte sizes as people write and read them: ``'256MB'`` to bytes, and bytes to ``'1.5 GB'``.

One module for both halves: the converter's command line (``--shard-size``) and the
loader's :class:`~clipshards.loader.TransportOptions` (``cache_limit="20GB"``,
``CLIPSHARDS_BLOCK_SIZE=8MB``) parse sizes the same way; reports print them the same way.
Units are binary (``1KB`` = ``1KiB`` = 1024 bytes).
"""

from __future__ import annotations

__all__ = ["parse_size", "human_bytes"]

_UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "K": 1024, "M": 1024**2, "G": 1024**3, "B": 1}


def parse_size(text: str) -> int:
    """Bytes from ``'256MB'``, ``'1GiB'``, ``'1.5G'``, ``'500000'`` ... (case-insensitive).

    Raises ``ValueError`` naming ``text`` when it is not a size.
    """
    t = str(text).strip().upper().replace("IB", "B")
    for suffix, mult in sorted(_UNITS.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * mult)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 256MB, 1GB, 1000000)") from None


def human_bytes(n: float) -> str:
    """``n`` bytes for people: ``'512 B'``, ``'1.5 MB'``, ``'2.0 TB'`` (binary units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover
