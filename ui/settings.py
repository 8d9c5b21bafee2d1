"""The one hosting-settings object the app reads (models, limits, cache, demo mode, feature dictionaries).

Read from ``settings.toml`` at the repository root, or from the file named by the
``CIRCUIT_EXPLORER_SETTINGS`` environment variable. Pages never read the file
themselves: they call :func:`get_settings`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from ui.feature_settings import DEFAULT_FEATURES, DictionaryEntry, dictionaries_for, feature_fields
from ui.scale_settings import scale_fields

SETTINGS_ENV_VAR = "CIRCUIT_EXPLORER_SETTINGS"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_PATH = REPO_ROOT / "settings.toml"
KNOWN_DTYPES = ("float32", "bfloat16", "float16")
KNOWN_DEVICES = ("auto", "cpu", "cuda", "mps")


class SettingsError(ValueError):
    """The settings file is missing a value or holds a bad one."""


@dataclasses.dataclass(frozen=True)
class Settings:
    model_allowlist: tuple[str, ...]
    allow_arbitrary_models: bool
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    max_loaded_models: int
    max_prompt_tokens: int
    max_concurrent_runs_per_device: int
    cache_directory: Path
    cache_size_limit_mb: int
    demo_mode: bool
    source: Path
    # Hosting past one machine (ui/scale_settings.py); the defaults are the laptop setup.
    cache_backend: str = "disk"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_maxmemory_mb: int = 0
    compute_backend: str = "local"
    ray_address: str = "auto"
    ray_app: str = "circuit-explorer"
    compute_timeout_s: float = 300.0
    auth_enabled: bool = False
    auth_provider: str = ""
    auth_allowed_domains: tuple[str, ...] = ()
    auth_allowed_emails: tuple[str, ...] = ()
    runs_per_minute_per_session: int = 0
    runs_per_minute_per_address: int = 0
    trust_forwarded_for: bool = False
    # model name -> the feature dictionaries the pages offer for it (ui/feature_settings.py)
    feature_dictionaries: tuple = DEFAULT_FEATURES

    @property
    def default_model(self) -> str:
        return self.model_allowlist[0]

    @property
    def arbitrary_models_allowed(self) -> bool:
        """Free-text hub names / local paths: only outside demo mode, and only when enabled."""
        return self.allow_arbitrary_models and not self.demo_mode

    def model_allowed(self, name: str) -> bool:
        return name in self.model_allowlist or (self.arbitrary_models_allowed and bool(name.strip()))

    def dictionaries_for(self, model_name: str) -> tuple[DictionaryEntry, ...]:
        """The ``[features]`` entries for this model, first = the default (none: the pages say so)."""
        return dictionaries_for(self.feature_dictionaries, model_name)


def settings_path() -> Path:
    override = os.environ.get(SETTINGS_ENV_VAR)
    return Path(override).expanduser() if override else DEFAULT_SETTINGS_PATH


def _positive_int(section: dict, key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{where}: '{key}' must be a positive integer, got {value!r}")
    return value


def load_settings(path: str | Path | None = None) -> Settings:
    """Parse and validate one settings file (no caching)."""
    path = Path(path) if path is not None else settings_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None

    models = raw.get("models", {})
    limits = raw.get("limits", {})
    cache = raw.get("cache", {})
    app = raw.get("app", {})

    allowlist = models.get("allowlist")
    if not isinstance(allowlist, list) or not allowlist or not all(isinstance(m, str) and m for m in allowlist):
        raise SettingsError(f"{path}: [models] allowlist must be a non-empty list of model names")
    dtypes = tuple(models.get("dtypes", ["float32"]))
    bad = [d for d in dtypes if d not in KNOWN_DTYPES]
    if not dtypes or bad:
        raise SettingsError(f"{path}: [models] dtypes must be a non-empty subset of {KNOWN_DTYPES}, got {bad}")
    devices = tuple(models.get("devices", ["auto"]))
    bad = [d for d in devices if d not in KNOWN_DEVICES]
    if not devices or bad:
        raise SettingsError(f"{path}: [models] devices must be a non-empty subset of {KNOWN_DEVICES}, got {bad}")

    cache_dir = Path(str(cache.get("directory", ".cache/results"))).expanduser()
    if not cache_dir.is_absolute():
        cache_dir = REPO_ROOT / cache_dir

    return Settings(
        model_allowlist=tuple(dict.fromkeys(allowlist)),
        allow_arbitrary_models=bool(models.get("allow_arbitrary_models", False)),
        dtypes=dtypes,
        devices=devices,
        max_loaded_models=_positive_int(models | {"max_loaded": models.get("max_loaded", 2)}, "max_loaded", str(path)),
        max_prompt_tokens=_positive_int(limits, "max_prompt_tokens", str(path)),
        max_concurrent_runs_per_device=_positive_int(limits, "max_concurrent_runs_per_device", str(path)),
        cache_directory=cache_dir,
        cache_size_limit_mb=_positive_int(cache | {"size_limit_mb": cache.get("size_limit_mb", 1024)}, "size_limit_mb", str(path)),
        demo_mode=bool(app.get("demo_mode", True)),
        source=path,
        **scale_fields(raw, str(path), SettingsError),
        **feature_fields(raw, str(path), SettingsError),
    )


_cached: tuple[tuple[str, int], Settings] | None = None


def get_settings() -> Settings:
    """The current settings, re-read only when the file (or the env override) changes."""
    global _cached
    path = settings_path()
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}") from None
    if _cached is None or _cached[0] != stamp:
        _cached = (stamp, load_settings(path))
    return _cached[1]
