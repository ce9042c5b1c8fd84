"""How shards are read: :class:`TransportOptions`, given in code or by ``CLIPSHARDS_*`` environment variables.

Remote files: retries, backoff and timeouts (used by :mod:`.retry`), block size and
read-ahead of sequential streams (:mod:`.readahead`), the local block cache (:mod:`.cache`).
Local files are read directly (``map_local`` is accepted and ignored). Sizes may be given as
``'20GB'`` (:func:`clipshards.convert.units.parse_size`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from clipshards.convert.storage_errors import CONNECT_TIMEOUT, connect_timeout_ok
from clipshards.convert.units import parse_size

__all__ = ["TransportOptions", "REMOTE_BLOCK_SIZE", "ENV_PREFIX"]

MiB = 1024 * 1024
REMOTE_BLOCK_SIZE = 8 * MiB
ENV_PREFIX = "CLIPSHARDS_"


def _size_value(name: str, value: Any) -> int:
    """Bytes from an int or a size string ('512MB', '20GB'); ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected a number of bytes or a size such as '20GB'")
    if isinstance(value, int):
        return value
    try:
        return parse_size(str(value))
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a number of bytes or a size such as '20GB'") from None


def _from_text(name: str, raw: str) -> Any:
    """The value of field ``name`` from its environment text (``ValueError`` if it is not one)."""
    if name in ("retries", "readahead"):
        return int(raw)
    if name in ("backoff", "max_backoff", "connect_timeout"):
        return float(raw)
    if name == "timeout":
        return None if raw.lower() in ("none", "0") else float(raw)
    if name == "map_local":
        if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(raw)
        return raw.lower() in ("1", "true", "yes")
    return raw  # sizes and cache_dir: checked by the options themselves


@dataclass(frozen=True)
class TransportOptions:
    """How shards are read: remote files (retries, streaming, cache).

    Each field can also come from the environment (``CLIPSHARDS_RETRIES``,
    ``CLIPSHARDS_CACHE_DIR``, ``CLIPSHARDS_CACHE_LIMIT=50GB`` ...), see :meth:`from_env`:
    handy under ``torchrun`` or in DataLoader workers, which inherit it.
    """

    retries: int = 5
    """Attempts after the first for a request that failed transiently."""
    backoff: float = 0.5
    """Seconds before the first retry; doubled each time (with jitter) up to ``max_backoff``."""
    max_backoff: float = 16.0
    timeout: Optional[float] = 120.0
    """Seconds one request may take before it is abandoned and retried (None: no limit)."""
    connect_timeout: float = CONNECT_TIMEOUT
    """Seconds a dataset being opened keeps trying an endpoint it cannot connect to (refused,
    unknown host, no answer) before it gives up with an error naming the URL (10 by default)."""
    block_size: int = REMOTE_BLOCK_SIZE
    """Bytes per request of a sequential stream, and per cached block."""
    readahead: int = 2
    """Blocks a sequential stream requests ahead of the one being read."""
    cache_dir: Optional[str] = None
    """Local folder for cached blocks of shards (None: no cache). Processes may share it."""
    cache_limit: int = 20 * 1024 * MiB
    """Bytes the cache may hold; least recently used blocks go first."""
    map_local: bool = False
    """Ignored, kept so that code passing it still runs: local clips used to be mapped into
    memory; they are copied now (a mapped clip changed under the tensors made from it when its
    shard was rewritten, and a shard truncated while mapped killed the process with SIGBUS)."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        for name in ("retries", "readahead"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, "must be an integer >= 0")
        for name in ("backoff", "max_backoff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                bad(name, "must be a number of seconds >= 0")
        if not connect_timeout_ok(self.connect_timeout):
            bad("connect_timeout", "must be a number of seconds in (0, 3600]")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0):
            bad("timeout", "must be a number of seconds > 0, or None for no limit")
        object.__setattr__(self, "block_size", _size_value("block_size", self.block_size))
        object.__setattr__(self, "cache_limit", _size_value("cache_limit", self.cache_limit))
        if self.block_size < 64 * 1024:
            bad("block_size", "must be at least 64 KiB")
        if not isinstance(self.map_local, bool):
            bad("map_local", "must be True or False")
        if self.map_local:
            warnings.warn("TransportOptions(map_local=True) is ignored: local clips are copied on read, so that "
                          "tensors never change when a shard is rewritten", DeprecationWarning, stacklevel=3)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
            if self.cache_limit < self.block_size:
                bad("cache_limit", f"must hold at least one block ({self.block_size} bytes)")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "TransportOptions":
        """Defaults, updated from ``CLIPSHARDS_<FIELD>`` environment variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _from_text(f.name, raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: not a valid {f.name}") from None
        values.update(overrides)
        return cls(**values)
