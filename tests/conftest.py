"""Session set-up shared by every test directory.

The weight cache (``lens_core.weight_cache``): this session's loads, and the app servers and
scripts its tests start (they inherit the environment), keep processed weights in a temporary
directory of the session's own, never in the user's ``~/.cache``. A directory already named in
``CIRCUIT_EXPLORER_WEIGHT_CACHE`` (or ``off``) is left as it is.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from lens_core import weight_arena, weight_cache


def pytest_configure(config) -> None:
    if weight_cache.ENV_DIR not in os.environ:
        config._weight_cache_dir = tempfile.mkdtemp(prefix="circuit-explorer-weight-cache-")
        os.environ[weight_cache.ENV_DIR] = config._weight_cache_dir


def pytest_unconfigure(config) -> None:
    directory = getattr(config, "_weight_cache_dir", None)
    if directory:
        weight_arena.wait()
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(weight_cache.ENV_DIR, None)
