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


@pytest.fixture
def bundled_settings(tmp_path, monkeypatch):
    """The repository's own settings.toml (the bundled model, demo limits), with its cache in a tmp dir."""
    from app_testkit import REPO_ROOT

    text = (REPO_ROOT / "settings.toml").read_text(encoding="utf-8")
    text = text.replace('directory = ".cache/results"', f"directory = {str(tmp_path / 'cache')!r}")
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    return path


@pytest.fixture
def gpt2_named_settings(tmp_path, monkeypatch):
    """The tiny model saved under a gpt2* name, so the classic GPT-2 presets are offered."""
    model_dir = build_tiny_gpt2(tmp_path / "gpt2-tiny")
    path = write_settings(tmp_path / "settings.toml", model_dir, tmp_path / "cache")
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    return model_dir


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model as the pages load it."""
    from lens_core import HookedTransformer

    return HookedTransformer.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu")
