"""A disk cache of processed weights: a checkpoint's second load maps them instead of processing again.

Why: processing (folding the norms, centring) reads and writes every weight, and writing that
much fresh memory alone costs more than ``transformers`` takes to map the checkpoint and run its
first forward pass (``bench/forward.py`` prints that floor). So the loader writes each model it
processes, exactly as it ends up (processed, in the requested dtype, on the CPU), into one
safetensors file here; a later load of the same checkpoint with the same choices maps that file
copy-on-write and reads each page on first use, as ``transformers`` does with a checkpoint.
Nothing is processed, and processes that load the same model share its pages in the page cache.
The entry also keeps :meth:`HookedTransformer.weights_hash` (what the result cache keys on), so
a cached load does not hash its weights again.

Where and how much: ``$CIRCUIT_EXPLORER_WEIGHT_CACHE`` (a directory, or ``off``), by default
``~/.cache/circuit-explorer/weights``; at most ``$CIRCUIT_EXPLORER_WEIGHT_CACHE_MB`` MiB (default
16384): past it, the least recently used entries are removed. ``from_pretrained(weight_cache=...)``
chooses per load: ``False`` (off), ``True`` (the default place) or a directory.

The key: every file the load reads (weights and ``config.json``) by resolved path, size, inode,
modification and change time; the dtype; the processing choices; the bytes of the ``lens_core``
files that shape the weights; the versions of torch and transformers, torch's CPU kernels and
thread count (results must be those an uncached load would give on this machine, bit for bit).
A file changed less than ``RACY_SECONDS`` ago is neither cached nor looked up: file times are coarse, and a rewrite
within the same tick would leave them unchanged.

Trust: entries hold tensors and JSON only, never pickle. An entry is written under a temporary
name and renamed into place, never rewritten; removing one unlinks it, which leaves a model that
maps it unharmed. A model's weights map their entry copy-on-write (``MAP_PRIVATE``): writing a
weight in place changes this process's copy, never the file. Anything else that truncates an
entry a model maps would fault that process, so the directory belongs to this cache alone. An
entry that cannot be read, or whose stored key differs, is logged, removed and loaded anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .safetensors_io import PADDING_PREFIX, SafetensorsError, map_file, read_metadata

log = logging.getLogger(__name__)

ENV_DIR = "CIRCUIT_EXPLORER_WEIGHT_CACHE"
ENV_MB = "CIRCUIT_EXPLORER_WEIGHT_CACHE_MB"
DEFAULT_DIR = "~/.cache/circuit-explorer/weights"
DEFAULT_MB = 16384
FORMAT = "circuit-explorer processed weights 1"
RACY_SECONDS = 2.0
# The library files whose code decides the processed weights; a change to any makes new entries.
_CODE = ["processing.py", "loading.py", "config.py", "components.py", "model.py", "safetensors_io.py", "families"]
Choice = Union[bool, str, os.PathLike, None]


@dataclass
class Entry:
    """Where one load's processed weights are (or will be) cached, and the key they are stored under."""

    root: Path
    key: dict[str, Any]
    limit_bytes: int
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:40]

    @property
    def path(self) -> Path:
        return self.root / f"{self.digest}.safetensors"


def cache_root(choice: Choice = None) -> Optional[Path]:
    """The cache directory for ``choice`` (see the module docstring), or None when caching is off."""
    if choice is False:
        return None
    if choice is None or choice is True:
        configured = os.environ.get(ENV_DIR, "")
        if configured.strip().lower() in ("off", "0", "false", "no", "none"):
            return None if choice is None else Path(DEFAULT_DIR).expanduser()
        return Path(configured or DEFAULT_DIR).expanduser()
    return Path(choice).expanduser()


def limit_bytes() -> int:
    raw = os.environ.get(ENV_MB, "")
    try:
        return int(float(raw) * 2**20) if raw.strip() else DEFAULT_MB * 2**20
    except ValueError:
        log.warning("%s=%r is not a number of MiB: using %d", ENV_MB, raw, DEFAULT_MB)
        return DEFAULT_MB * 2**20


_code_digest: Optional[str] = None
_code_lock = threading.Lock()


def code_digest() -> str:
    """sha256 over the library files that shape processed weights (read once per process)."""
    global _code_digest
    with _code_lock:
        if _code_digest is None:
            here = Path(__file__).parent
            digest = hashlib.sha256()
            for name in _CODE:
                for path in sorted((here / name).glob("*.py")) if (here / name).is_dir() else [here / name]:
                    digest.update(path.name.encode() + b"\0" + path.read_bytes())
            _code_digest = digest.hexdigest()
    return _code_digest


def _transformers_version() -> str:
    """transformers reads the config the weights are converted by; its version is part of the key."""
    try:
        from importlib.metadata import version

        return version("transformers")
    except Exception:  # noqa: BLE001 - not installed the usual way: the key says so
        return "unknown"


def _file_identity(path: Path, now_ns: int) -> Optional[dict[str, Any]]:
    """What identifies one file's content without reading it; None when it changed too recently to trust."""
    st = os.stat(path)
    if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_SECONDS * 1e9:
        return None
    return {"path": str(Path(path).resolve()), "size": st.st_size, "inode": st.st_ino, "device": st.st_dev,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def entry_for(choice: Choice, files: list[Path], dtype: torch.dtype, processing: dict[str, bool]) -> tuple[Optional[Entry], str]:
    """(the entry for a load reading ``files``, or None; why not, when None)."""
    root = cache_root(choice)
    if root is None:
        return None, "off"
    now = time.time_ns()
    try:
        identities = [_file_identity(path, now) for path in files]
    except OSError as exc:
        return None, f"not cached: cannot read the checkpoint's file times ({exc})"
    if any(identity is None for identity in identities):
        return None, f"not cached: a checkpoint file changed in the last {RACY_SECONDS:g} s"
    key = {"format": FORMAT, "files": identities, "dtype": str(dtype).removeprefix("torch."),
           "processing": dict(sorted(processing.items())), "code": code_digest(), "torch": torch.__version__,
           "transformers": _transformers_version(),
           "cpu": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    return Entry(root, key, limit_bytes()), ""


def lookup(entry: Entry) -> Optional[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """(the cached weights, mapped; what was stored beside them: ``applied``, ``weights_hash``), or None."""
    path = entry.path
    if not path.is_file():
        return None
    try:
        mapped = map_file(path, one_mapping=True)  # the header is read once, for the key and the tensors
        metadata = mapped.metadata
        if metadata.get("format") != FORMAT or json.loads(metadata.get("key", "null")) != entry.key:
            raise SafetensorsError("its stored key is not this load's")
        info = json.loads(metadata["info"])
        tensors = {name: tensor for name, tensor in mapped.tensors.items() if not name.startswith(PADDING_PREFIX)}
    except (SafetensorsError, OSError, KeyError, ValueError, TypeError) as exc:
        discard(entry, f"cannot be used ({exc})")
        return None
    try:
        os.utime(path)  # recently used: the last to be removed
    except OSError:
        pass
    return tensors, info


def discard(entry: Entry, why: str) -> None:
    log.warning("weight cache entry %s %s: removed; loading from the checkpoint", entry.path, why)
    try:
        entry.path.unlink()
    except OSError:
        pass


def evict(root: Path, limit: int, keep: Optional[Path] = None) -> list[Path]:
    """Remove the least recently used entries until the rest fit in ``limit`` bytes (``keep`` stays), and
    temporary files left for over an hour by a load that died; returns what was removed."""
    removed: list[Path] = []
    entries = []
    now = time.time()
    for path in root.iterdir():
        try:
            st = path.stat()
        except OSError:
            continue
        if path.name.endswith(".tmp") and now - st.st_mtime > 3600:
            removed.append(path)
        elif path.suffix == ".safetensors" and not path.name.startswith("."):
            entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        if path != keep:
            removed.append(path)
            total -= size
    for path in removed:
        try:
            path.unlink()
        except OSError:
            pass
    return removed


def describe(root: Path) -> list[dict[str, Any]]:
    """One row per entry in ``root``, most recently used first: path, MiB, last use, the checkpoint directory,
    dtype, processing, and whether it can still be used (``current``: its checkpoint files are unchanged)."""
    rows = []
    paths = sorted(root.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    for path in paths:
        row: dict[str, Any] = {"path": str(path), "mib": path.stat().st_size / 2**20,
                               "used": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))}
        try:
            key = json.loads(read_metadata(path)["key"])
            files = key["files"]
            row.update(checkpoint=str(Path(files[0]["path"]).parent), dtype=key["dtype"],
                       processing=",".join(k for k, v in key["processing"].items() if v) or "none")
            row["current"] = all(_same_file(identity) for identity in files) and key["code"] == code_digest()
        except (SafetensorsError, OSError, KeyError, ValueError, TypeError, IndexError):
            row.update(checkpoint="?", dtype="?", processing="?", current=False)
        rows.append(row)
    return rows


def _same_file(identity: dict[str, Any]) -> bool:
    try:
        st = os.stat(identity["path"])
    except OSError:
        return False
    return (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == (
        identity["size"], identity["inode"], identity["mtime_ns"], identity["ctime_ns"])
