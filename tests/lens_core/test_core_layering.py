"""The loader depends on the model, never the other way round (issue 24).

``lens_core.model`` and the modules under it may not import ``lens_core.loading`` at all (not even lazily
inside a function); ``from_pretrained`` reaches the loader that ``lens_core.loading`` installs on import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lens_core

PACKAGE = Path(lens_core.__file__).parent
# The model and everything it is built from.
BELOW_LOADING = ["model.py", "components.py", "config.py", "hooks.py", "tokens.py", "compat.py", "cache.py",
                 "cache_neurons.py", "utils.py", "factored_matrix.py"]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_model_and_its_parts_never_import_the_loader() -> None:
    for name in BELOW_LOADING:
        path = PACKAGE / name
        if not path.exists():
            continue
        imports = _imported_modules(path)
        offending = sorted(i for i in imports if i.endswith("loading") or ".loading." in i or i.endswith(".loading"))
        assert not offending, f"{name} imports the loader: {offending}"


def test_loader_imports_the_model() -> None:
    assert any(i.endswith("model") or i.endswith(".model.HookedTransformer") for i in _imported_modules(PACKAGE / "loading.py"))


def test_from_pretrained_works_when_only_the_model_module_is_imported() -> None:
    code = ("from lens_core.model import HookedTransformer\n"
            "m = HookedTransformer.from_pretrained('default')\n"
            "print(type(m).__module__, m.cfg.n_layers)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lens_core.model", "3"]


def test_the_weight_cache_sits_between_the_loader_and_the_model() -> None:
    """loading ─→ weight_arena ─→ weight_cache ─→ safetensors_io: none of them reaches back up, and the model
    knows nothing of them (it carries only the words of what its loader did, ``weight_cache``)."""
    for name in ("weight_arena.py", "weight_cache.py", "safetensors_io.py"):
        imports = _imported_modules(PACKAGE / name)
        assert not [i for i in imports if i.endswith("loading") or ".loading." in i], name
    assert not [i for i in _imported_modules(PACKAGE / "weight_cache.py") if "weight_arena" in i]
    for name in BELOW_LOADING:
        path = PACKAGE / name
        if path.exists():
            assert not [i for i in _imported_modules(path) if "weight_cache" in i or "weight_arena" in i], name
