"""``python -m cache_store weights``: lists the processed-weight cache, prunes what can never be used again, clears."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import hf_tiny
from cache_store.cli import main
from lens_core import HookedTransformer, weight_arena, weight_cache

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(weight_cache, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(weight_arena, "WRITE_DELAY_S", 0.0)


def load(path, cache, **kwargs):
    model = HookedTransformer.from_pretrained(str(path), weight_cache=cache, **kwargs)
    weight_arena.wait()
    return model


def test_list_prune_clear(tmp_path, capsys):
    checkpoints = [hf_tiny.save_as_directory(hf_tiny.gpt2(seed=seed), tmp_path / f"c{seed}") for seed in range(2)]
    cache = tmp_path / "cache"
    for checkpoint in checkpoints:
        load(checkpoint, cache)
    load(checkpoints[0], cache, dtype="bfloat16")
    time.sleep(0.05)
    hf_tiny.gpt2(seed=5).save_pretrained(checkpoints[1])  # c1's entry can never be used again
    assert main(["weights", "--dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("current") == 2 and listing.count("stale") == 1 and ": 3 entries" in listing
    assert "bfloat16" in listing and checkpoints[0] in listing
    main(["weights", "--dir", str(cache), "--prune"])
    assert ": 2 entries" in capsys.readouterr().out and len(list(cache.glob("*.safetensors"))) == 2
    assert load(checkpoints[0], cache).weight_cache.startswith("loaded from ")
    main(["weights", "--dir", str(cache), "--clear"])
    assert ": 0 entries" in capsys.readouterr().out and not list(cache.glob("*.safetensors"))


def test_the_command_reads_the_environment(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cache_store", "weights"], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={"PATH": "/usr/bin:/bin", "CIRCUIT_EXPLORER_WEIGHT_CACHE": str(tmp_path / "none-yet")},
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{tmp_path / 'none-yet'}: 0 entries" in out.stdout
