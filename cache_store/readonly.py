"""Read a diskcache directory without writing anything: for a cache directory the process cannot write.

``diskcache.Cache`` writes even to read: opening runs ``CREATE TABLE IF NOT
EXISTS`` and settings updates, every ``get`` records statistics and (LRU) the
access time, and SQLite in WAL mode needs to create the ``-shm`` file. So on a
read-only directory it serves nothing. :class:`ReadOnlyIndex` opens the same
``cache.db`` with SQLite's read-only URI mode (``mode=ro``), or, where even that
needs a write (WAL without its shared-memory file), as ``immutable=1``, and
fetches values through :class:`cache_store.store.SafeDisk` (raw bytes only, never
a pickle), exactly as the read-write store would.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from diskcache.core import DBNAME


class ReadOnlyIndex:
    """The entries of a diskcache directory, read-only. ``get`` returns bytes, an open value file, or None."""

    def __init__(self, directory: Path, disk: Any) -> None:
        self.directory = Path(directory)
        self.disk = disk
        db = self.directory / DBNAME
        if not db.is_file():
            raise FileNotFoundError(f"no cache index at {db}")
        self._lock = threading.Lock()
        error: Exception | None = None
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                con = sqlite3.connect(f"{db.as_uri()}?{query}", uri=True, check_same_thread=False)
                con.execute("SELECT COUNT(*) FROM Cache").fetchone()
            except sqlite3.Error as exc:
                error = exc
                continue
            self.mode = query
            self._con = con
            return
        raise error  # type: ignore[misc]

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._con.execute(
                "SELECT mode, filename, value, expire_time FROM Cache WHERE key = ? AND raw = 1", (key,)
            ).fetchone()
        if row is None:
            return None
        mode, filename, value, expire_time = row
        if expire_time is not None and expire_time < time.time():
            return None
        return self.disk.fetch(mode, filename, value, True)

    def count_and_bytes(self) -> tuple[int, int]:
        with self._lock:
            count, size = self._con.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM Cache").fetchone()
        return int(count), int(size)

    def close(self) -> None:
        with self._lock:
            self._con.close()
