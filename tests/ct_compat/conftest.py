"""Side-by-side checks against circuit-tracer 0.5.0 on the same weights (issue 20).

circuit-tracer is not a dependency: it lives in its own venv (requirements-circuit-tracer.txt), never
the main one. Without it this directory is skipped; with ``CE_REQUIRE_CT=1`` a missing circuit_tracer
is an error, so CI never skips these silently.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    import circuit_tracer  # noqa: F401
except ImportError:
    if os.environ.get("CE_REQUIRE_CT") == "1":
        raise RuntimeError("CE_REQUIRE_CT=1 but circuit_tracer is not importable: run tests/ct_compat in .venv-ct")
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config):
    # circuit-tracer's backward pass starts from a module output that needs no input gradient: torch warns each time
    config.addinivalue_line("filterwarnings", "ignore:Full backward hook is firing:UserWarning")
