"""App tests run on a tiny random GPT-2 built here (no download), through a settings file in a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_model import build_tiny_gpt2, write_settings



@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_random_model"))


@pytest.fixture
def app_settings(tiny_model_dir, tmp_path, monkeypatch):
    """Point the app at the tiny model; returns a function to rewrite the settings."""

    def configure(**overrides) -> Path:
        path = write_settings(tmp_path / "settings.toml", tiny_model_dir, tmp_path / "cache", **overrides)
        monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
        return path

    configure()
    return configure


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model as the pages load it."""
    from lens_core import HookedTransformer

    return HookedTransformer.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu")
