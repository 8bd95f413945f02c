"""How the Faust agents' tables are stored: RocksDB with bounded memory.

Faust's RocksDB defaults are sized for a dedicated host: each RocksDB instance — one per table
and partition, 3 tables x 6 partitions = 18 in a default worker — may hold 3 write buffers of
64 MB and a 2 GB block cache. The agents keep a few hundred bytes per series, so those buffers
only ever hold this process's own state a second time. Small buffers and caches keep the
worker's memory proportional to its state (``bench/README.md``, worker memory).
"""

from __future__ import annotations

from typing import Any

MB = 1024 * 1024


def table_options() -> dict[str, Any]:
    """Options for ``app.Table(..., options=table_options())``: a new dict per table (Faust's
    RocksDB store pops keys from the dict it is given)."""
    return {"write_buffer_size": 1 * MB, "max_write_buffer_number": 2, "block_cache_size": 1 * MB,
            "target_file_size_base": 8 * MB}  # fmt: skip
