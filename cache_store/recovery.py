"""How the disk store opens its index and recovers it without a person (mixed into ``ResultStore``).

- Deleted or replaced while in use (the directory, or its ``cache.db``): every read
  and write first compares the ``(device, inode)`` of ``cache.db`` with the one
  opened (one ``stat``); on a difference the store reopens the path, which
  recreates it, so every process using the directory shares the new index.
- Damaged (not a SQLite database, or malformed), at open or in use: the file is
  renamed ``cache.db.corrupt-<time>-<pid>`` (with its ``-wal``/``-shm``) and a
  fresh, empty index is started; a warning names both.
- Not writable (read-only mount, permissions), at open or in use: the index is
  opened read-only (:class:`cache_store.readonly.ReadOnlyIndex`); hits are served,
  misses are computed and not stored; a warning says so. Read-write is tried again
  every ``RETRY_S`` seconds (at the next request after that).
- Cannot be opened at all: ``degraded`` (every call computes), retried every ``RETRY_S``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from typing import Any

import diskcache
from diskcache.core import DBNAME

from .readonly import ReadOnlyIndex

log = logging.getLogger("cache_store.store")

# What a broken cache can raise: file-system errors, SQLite errors, lock timeouts.
CACHE_FAULTS = (OSError, sqlite3.Error, diskcache.Timeout)
RETRY_S = 30.0


def is_corrupt_index(error: BaseException) -> bool:
    """SQLite saying the index is not a database or is damaged (not: locked, read-only, missing)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text)


def is_read_only_error(error: BaseException) -> bool:
    text = str(error).lower()
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    return "readonly" in text or "read-only" in text or "unable to open database file" in text


class IndexRecovery:
    """Opening, checking and reopening ``self._cache`` (read-write) or ``self._reader`` (read-only).

    The host class sets ``directory``, ``_options`` (diskcache.Cache keyword arguments, ``disk``
    included), ``_always_read_only``, ``_lock`` (an RLock), and provides ``_fault``.
    """

    directory: Any
    _cache: diskcache.Cache | None
    _reader: ReadOnlyIndex | None
    _index_id: tuple[int, int] | None
    _retry_at: float

    def _index_stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory / DBNAME)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _open(self, read_only_because: BaseException | None = None) -> None:
        """Read-write (a damaged index moved aside and started afresh); else read-only where the
        index can be read; else degraded. Called in ``__init__`` or with ``_lock`` held."""
        for handle in (self._cache, self._reader):
            if handle is not None:
                try:
                    handle.close()
                except CACHE_FAULTS:
                    pass
        self._cache = self._reader = None
        self._index_id = None
        self._retry_at = time.monotonic() + RETRY_S
        error = read_only_because
        if error is None and not self._always_read_only:
            for attempt in range(2):
                opened_over = self._index_stat()
                try:
                    self._cache = diskcache.Cache(str(self.directory), **self._options)
                    self.size_limit_bytes = int(self._cache.size_limit)
                    self._index_id = self._index_stat()
                    if self._warned & {"read-only", "open"}:
                        log.warning("cache_store: %s is open for reading and writing again", self.directory)
                        self._warned -= {"read-only", "open"}
                    return
                except CACHE_FAULTS as exc:
                    error = exc
                    if attempt or not is_corrupt_index(exc) or not self._move_index_aside(opened_over, exc):
                        break
        try:
            self._reader = ReadOnlyIndex(self.directory, self._options["disk"](str(self.directory)))
            self._index_id = self._index_stat()
        except (CACHE_FAULTS + (ValueError,)) as exc:
            self._fault("open", error or exc)
            return
        if error is None:
            log.info("cache_store: %s opened read-only, as asked", self.directory)
        else:  # warned once; the retries every RETRY_S that find it still read-only log at debug level
            self._note_once("read-only", logging.WARNING, "cache_store: %s cannot be written (%s: %s); serving its "
                            "entries read-only (sqlite %s), computing misses without storing them", self.directory,
                            type(error).__name__, error, self._reader.mode)

    def _move_index_aside(self, expected: tuple[int, int] | None, error: BaseException) -> bool:
        """Rename the damaged index, unless the file at the path is no longer the one that failed
        (another process moved it already): True when the path is free for a fresh index."""
        db = self.directory / DBNAME
        if expected is not None and self._index_stat() != expected:
            return True
        aside = db.with_name(f"{DBNAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.replace(db, aside)
            for suffix in ("-wal", "-shm"):  # the damaged database's journal files go with it
                if db.with_name(DBNAME + suffix).exists():
                    os.replace(db.with_name(DBNAME + suffix), aside.with_name(aside.name + suffix))
        except OSError as exc:
            log.warning("cache_store: the index %s is damaged (%s) and cannot be moved aside (%s)", db, error, exc)
            return False
        log.warning("cache_store: the index %s was damaged (%s: %s); moved it to %s and started a fresh, empty index "
                    "(the old index's value files are no longer used)", db, type(error).__name__, error, aside.name)
        return True

    def _index_ok(self) -> bool:
        """Nothing to do: the open index is the one at the path, and (read-only or degraded) no retry is due."""
        same = self._index_id is not None and self._index_stat() == self._index_id
        if self._cache is not None:
            return same
        if self._reader is not None:
            return same and (self._always_read_only or time.monotonic() < self._retry_at)
        return time.monotonic() < self._retry_at

    def _check_index(self) -> None:
        """Before each read and write: reopen if the index was deleted or replaced, or a retry is due."""
        if self._index_ok():
            return
        with self._lock:
            if self._index_ok():
                return  # another thread reopened it meanwhile
            if self._cache is not None or self._reader is not None:
                current = self._index_stat()
                if current != self._index_id:
                    log.warning("cache_store: the index %s was %s while in use; reopening %s", self.directory / DBNAME,
                                "deleted" if current is None else "replaced", self.directory)
            self._open()

    def _recover(self, failed: diskcache.Cache, error: BaseException) -> bool:
        """After a read or write error on ``failed``: move a damaged index aside and start afresh, or
        go read-only when the directory cannot be written. True when reopened (try once more)."""
        corrupt, read_only = is_corrupt_index(error), is_read_only_error(error)
        if not (corrupt or read_only or self._index_stat() != self._index_id):
            return False
        with self._lock:
            if self._cache is not failed:
                return True  # another thread reopened it already
            if self._index_stat() != self._index_id:  # deleted or replaced meanwhile: open what is there now
                self._open()
            elif corrupt:
                self._move_index_aside(self._index_id, error)
                self._open()
            else:
                self._open(read_only_because=error)
        return True

    def _note_once(self, what: str, level: int, message: str, *args: Any) -> None:
        log.log(logging.DEBUG if what in self._warned else level, message, *args)
        self._warned.add(what)
