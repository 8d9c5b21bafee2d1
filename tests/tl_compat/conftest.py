"""Side-by-side checks against transformer-lens 4.3.0 on the same weights.

transformer-lens is not a dependency: it lives in the bench venv (requirements-bench.txt). Without it
this directory is skipped; with ``CE_REQUIRE_TL=1`` (``.ci/run`` sets it and runs this directory in
that venv) a missing transformer-lens is an error, so CI never skips these silently.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    import transformer_lens  # noqa: F401
except ImportError:
    if os.environ.get("CE_REQUIRE_TL") == "1":
        raise RuntimeError("CE_REQUIRE_TL=1 but transformer_lens is not importable: run tests/tl_compat in the bench venv")
    collect_ignore_glob = ["test_*.py"]
else:
    from tl_pairs import MODELS, pair

    @pytest.fixture(scope="session", params=MODELS)
    def models(request):
        """(ours, bridge, tokens) for the bundled model and a tiny random model of each family."""
        return pair(request.param)

    @pytest.fixture(scope="session")
    def bundled():
        return pair("bundled")
