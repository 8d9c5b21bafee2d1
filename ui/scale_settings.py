"""Settings for hosting past one machine: shared cache, remote model workers, sign-in, demo budget.

Parsed from the same settings file as the rest (:func:`ui.settings.load_settings`
calls :func:`scale_fields`); every key is optional and its default keeps the
laptop setup: disk cache, models in-process, no sign-in, no run budget.

=============================================  ==============================================================
key                                            meaning
=============================================  ==============================================================
``[cache] backend``                            ``"disk"`` (default: diskcache in ``directory``) or ``"redis"``
``[cache] redis_url``                          e.g. ``"redis://redis:6379/0"`` (a database for this app alone)
``[cache] redis_maxmemory_mb``                 >0: the app sets Redis's ``maxmemory`` and ``allkeys-lru``
``[compute] backend``                          ``"local"`` (default: models in this process) or ``"ray"``
``[compute] ray_address``                      ``"auto"`` (the node's Ray) or ``"ray://head:10001"``...
``[compute] ray_app``                          the Serve application name (default ``"circuit-explorer"``)
``[compute] timeout_s``                        longest a remote run may take before a clear error (300)
``[auth] enabled``                             require an OpenID Connect sign-in on every page (false)
``[auth] provider``                            the ``[auth.<name>]`` provider in ``secrets.toml``; "" = ``[auth]``
``[auth] allowed_domains``, ``allowed_emails``  who may use the app once signed in (both empty: anyone)
``[limits] runs_per_minute_per_session``       >0: new computations per minute per browser session
``[limits] runs_per_minute_per_address``       >0: new computations per minute per client address
``[limits] trust_forwarded_for``               take the address from ``X-Forwarded-For`` (behind a proxy)
=============================================  ==============================================================
"""

from __future__ import annotations

from typing import Any

CACHE_BACKENDS = ("disk", "redis")
COMPUTE_BACKENDS = ("local", "ray")


def _choice(section: dict, key: str, options: tuple[str, ...], where: str, error: type[Exception]) -> str:
    value = section.get(key, options[0])
    if value not in options:
        raise error(f"{where}: '{key}' must be one of {options}, got {value!r}")
    return value


def _count(section: dict, key: str, where: str, error: type[Exception], default: int = 0) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise error(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def _strings(section: dict, key: str, where: str, error: type[Exception]) -> tuple[str, ...]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise error(f"{where}: '{key}' must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip().lower().lstrip("@") for v in value)


def scale_fields(raw: dict[str, Any], where: str, error: type[Exception]) -> dict[str, Any]:
    """The hosting fields of :class:`ui.settings.Settings` from the parsed TOML."""
    cache, compute, auth, limits = (raw.get(k, {}) for k in ("cache", "compute", "auth", "limits"))
    timeout = compute.get("timeout_s", 300)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise error(f"{where}: [compute] 'timeout_s' must be a positive number, got {timeout!r}")
    return {
        "cache_backend": _choice(cache, "backend", CACHE_BACKENDS, where, error),
        "redis_url": str(cache.get("redis_url", "redis://127.0.0.1:6379/0")),
        "redis_maxmemory_mb": _count(cache, "redis_maxmemory_mb", where, error),
        "compute_backend": _choice(compute, "backend", COMPUTE_BACKENDS, where, error),
        "ray_address": str(compute.get("ray_address", "auto")),
        "ray_app": str(compute.get("ray_app", "circuit-explorer")),
        "compute_timeout_s": float(timeout),
        "auth_enabled": bool(auth.get("enabled", False)),
        "auth_provider": str(auth.get("provider", "")),
        "auth_allowed_domains": _strings(auth, "allowed_domains", where, error),
        "auth_allowed_emails": _strings(auth, "allowed_emails", where, error),
        "runs_per_minute_per_session": _count(limits, "runs_per_minute_per_session", where, error),
        "runs_per_minute_per_address": _count(limits, "runs_per_minute_per_address", where, error),
        "trust_forwarded_for": bool(limits.get("trust_forwarded_for", False)),
    }
