"""Where a load that misses the weight cache processes its weights, and how the entry reaches the disk.

An :class:`Arena` is an anonymous in-memory file (``memfd_create``) mapped shared: the processing
writes each result into it (:meth:`Arena.new`) at the cost of fresh memory, no more.
:meth:`Arena.seal` then places what is not there yet (small results, casts to the requested
dtype), writes a header and returns the tensors through a *private* mapping of the same pages:
the model's weights, with no copy. From then on nothing writes the in-memory file (a write into a
weight of the model copies its page, copy-on-write), so :meth:`Arena.persist` can write it to the
cache in a background thread, started a moment later at the lowest CPU priority, race-free: it hashes the weights (for the entry's
``weights_hash``) from a mapping of its own, writes the header and sends the data to a temporary
file with ``sendfile`` (a full disk is an error returned, never a fault), and renames it into
place. The thread is not a daemon: a script that ends right after loading still finishes its
entry. :func:`wait` joins the writers (tests, benchmarks). Linux only (``memfd_create``);
elsewhere a miss loads as if the cache were off, and says so.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .model import weights_digest
from .safetensors_io import ALIGNMENT, DTYPES, PADDING_PREFIX, SafetensorsError, header_bytes, map_file, read_header
from .weight_cache import ENV_DIR, FORMAT, Entry, evict

log = logging.getLogger(__name__)

# The writer starts this long after the load returns, so that the first forward passes of the model it was
# loaded for do not share the CPU with it (a thread at the lowest priority still slows OpenMP's parallel regions).
WRITE_DELAY_S = 1.0
_writers: set[threading.Thread] = set()
_FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_BYTES = {code: torch.empty((), dtype=dtype).element_size() for code, dtype in DTYPES.items()}
_writers_lock = threading.Lock()


class Arena:
    """One load's processed weights in an in-memory file (module docstring). Raises OSError if it cannot be made."""

    def __init__(self, entry: Entry, capacity: int, reserve: int, target: torch.dtype = torch.float32) -> None:
        self.entry, self.reserve, self.target = entry, reserve, target
        self.size = reserve + capacity
        self.fd = os.memfd_create("circuit-explorer-weights", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.region: Optional[mmap.mmap] = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED,
                                                         prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise
        self.base = torch.frombuffer(self.region, dtype=torch.uint8, count=1).data_ptr()
        self.offset = reserve
        self.slots: dict[int, tuple[int, int]] = {}  # address: (file offset, bytes) of each tensor handed out
        self.entries: list[tuple[str, torch.dtype, list[int], int, int]] = []

    def new(self, shape: torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised tensor in the file (fresh memory if the file is full, which its sizing avoids)."""
        count = math.prod(shape)
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        start = self.offset + -self.offset % ALIGNMENT
        if self.region is None or count == 0 or start + nbytes > self.size:
            return torch.empty(shape, dtype=dtype)
        tensor = torch.frombuffer(self.region, dtype=dtype, count=count, offset=start).view(shape)
        self.offset = start + nbytes
        self.slots[tensor.data_ptr()] = (start, nbytes)
        return tensor

    def copy_slot(self, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
        """Where the reader copies a misaligned tensor (``map_file(copy_into=...)``): a float32 load's float32
        tensor goes in the arena, to be processed in place there; anything else to fresh memory (it is cast first)."""
        if dtype == torch.float32 == self.target:
            return self.new(torch.Size(shape), dtype)
        return torch.empty(shape, dtype=dtype)

    def holds(self, tensor: torch.Tensor) -> bool:
        return self.base <= tensor.data_ptr() < self.base + self.size

    def seal(self, weights: dict[str, torch.Tensor], target: torch.dtype) -> dict[str, torch.Tensor]:
        """``weights`` in the file (floating tensors in ``target``, each in its own slot: a result already in one
        stays where it is), returned as copy-on-write views of it. Raises OSError when they do not fit."""
        placed: dict[str, torch.Tensor] = {}
        used: set[int] = set()
        for name, tensor in weights.items():
            dtype = target if tensor.is_floating_point() else tensor.dtype
            slot = self.slots.get(tensor.data_ptr())
            if not (tensor.dtype == dtype and tensor.is_contiguous() and slot is not None and slot[0] not in used
                    and slot[1] == tensor.numel() * tensor.element_size()):
                tensor = self.new(tensor.shape, dtype).copy_(tensor)
                slot = self.slots.get(tensor.data_ptr())
            if slot is None and tensor.numel():
                raise OSError(f"the weight cache entry has no room for {name!r}")
            start, nbytes = slot if slot is not None else (self.offset, 0)
            used.add(start)
            self.entries.append((name, tensor.dtype, list(tensor.shape), start - self.reserve, start - self.reserve + nbytes))
        self._release_unused(used)
        self.region = None  # the processing is over: nothing may write the file from here on
        self.end = max([self.reserve] + [self.reserve + end for *_, end in self.entries])
        self.keep = self.end - self.reserve <= self.entry.limit_bytes
        self._write_header({"format": FORMAT, "state": "in memory"})
        os.ftruncate(self.fd, self.end)
        return {name: tensor for name, tensor in map_file(self._path(), one_mapping=True).tensors.items()
                if not name.startswith(PADDING_PREFIX)}

    def _release_unused(self, used: set[int]) -> None:
        """Give back the memory of slots no weight ended in (a copy that a step replaced): the file reads zeros there."""
        page = mmap.PAGESIZE
        for start, nbytes in self.slots.values():
            lo, hi = start + -start % page, (start + nbytes) // page * page
            if start not in used and hi > lo:
                self.region.madvise(mmap.MADV_REMOVE, lo, hi - lo)

    def persist(self, applied: dict[str, bool]) -> str:
        """Write the sealed file to the cache in a background thread; returns the model's ``weight_cache`` words."""
        if not self.keep:
            self.abort()
            return (f"not stored: {(self.end - self.reserve) / 2**20:.0f} MiB is over the cache's bound "
                    f"({self.entry.limit_bytes / 2**20:.0f} MiB)")
        thread = threading.Thread(target=self._persist, args=(applied,), name="weight-cache-writer")
        with _writers_lock:
            _writers.add(thread)
        thread.start()
        return f"stored in {self.entry.path} (written in the background)"

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def _write_header(self, metadata: dict[str, str]) -> bytes:
        try:
            head = header_bytes(self.entries, metadata, self.reserve)
        except SafetensorsError as exc:
            raise OSError(str(exc)) from None
        os.pwrite(self.fd, head, 0)
        return head

    def _persist(self, applied: dict[str, bool]) -> None:
        entry = self.entry
        temporary = entry.root / f".{entry.digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            # The lowest CPU priority, for this thread alone (Linux: a thread id is a process id to setpriority):
            # the model's first forward passes go first; the entry is written in the time they leave.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):
            pass
        time.sleep(WRITE_DELAY_S)
        try:
            tensors = {name: t for name, t in map_file(self._path(), one_mapping=True).tensors.items()
                       if not name.startswith(PADDING_PREFIX)}
            info = {"applied": applied, "weights_hash": weights_digest(tensors)}
            del tensors
            head = header_bytes(self.entries, {"format": FORMAT, "key": json.dumps(entry.key, sort_keys=True),
                                               "info": json.dumps(info, sort_keys=True)}, self.reserve)
            entry.root.mkdir(parents=True, exist_ok=True)
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(out, head)
                sent = self.reserve
                while sent < self.end:
                    count = os.sendfile(out, self.fd, sent, self.end - sent)
                    if count <= 0:
                        raise OSError("sendfile stopped before the end of the weights")
                    sent += count
            finally:
                os.close(out)
            os.replace(temporary, entry.path)
            log.info("stored processed weights in %s (%.0f MiB; %s=off turns the weight cache off)", entry.path,
                     self.end / 2**20, ENV_DIR)
            evict(entry.root, entry.limit_bytes, keep=entry.path)
        except (OSError, SafetensorsError, ValueError) as exc:
            log.warning("could not write the weight cache entry %s (%s); the next load processes again", entry.path, exc)
            try:
                temporary.unlink()
            except OSError:
                pass
        finally:
            self.abort()
            with _writers_lock:
                _writers.discard(threading.current_thread())


def arena_for(entry: Entry, files: list[Path], target: torch.dtype) -> tuple[Optional[Arena], str]:
    """(an Arena for a load of the weight ``files`` in ``target``, or None; why not, in words). The in-memory
    file is sparse, so it is sized generously: only what is written takes memory."""
    itemsize = torch.empty((), dtype=target).element_size()
    estimate, reserve = 0, 64 * 1024 + 4 * len(json.dumps(entry.key))  # reserve: the header, with room to spare
    for path in files:
        if path.suffix == ".safetensors":
            try:
                _, header = read_header(path)
            except (SafetensorsError, OSError):
                return None, "not stored: the checkpoint cannot be read"  # the load that follows says why
            estimate += sum(math.prod(info["shape"]) * (itemsize if info["dtype"] in _FLOATS else _BYTES[info["dtype"]])
                            for info in header.values())
            reserve += sum(2 * len(name) + 256 for name in header)  # each tensor's entry, and a padding entry
        else:  # a pickled checkpoint: at most this much, if it is in half precision; entries are guessed
            estimate += path.stat().st_size // 2 * itemsize
            reserve += path.stat().st_size // 2**14
    if estimate > entry.limit_bytes:
        return None, f"not stored: {estimate / 2**20:.0f} MiB is over the cache's bound ({entry.limit_bytes / 2**20:.0f} MiB)"
    if not hasattr(os, "memfd_create"):
        return None, "not stored: the weight cache needs Linux (memfd_create)"
    try:
        entry.root.mkdir(parents=True, exist_ok=True)
        if not os.access(entry.root, os.W_OK | os.X_OK):
            raise PermissionError(f"{entry.root} is not writable")
    except OSError as exc:
        log.warning("the weight cache directory %s cannot be used (%s); loading without it", entry.root, exc)
        return None, f"not stored: the cache directory cannot be written ({exc})"
    try:
        return Arena(entry, 3 * estimate + 2**20, reserve + -reserve % 4096, target), ""
    except OSError as exc:
        return None, f"not stored: {exc}"


def wait(timeout: Optional[float] = None) -> None:
    """Join the background writers started so far (tests and benchmarks: the entry is on disk after this)."""
    with _writers_lock:
        pending = list(_writers)
    for thread in pending:
        thread.join(timeout)
