"""deploy/: the compose file is well formed and wires what the README says (no Docker needed).

``docker compose config -q`` is the real validator; CI machines have Docker without the
compose plugin, so this checks the structure the deployment depends on instead: every
service, file, build context and dependency it names exists, the proxy is sticky and
passes the websocket, Redis evicts by LRU, and the settings the app replicas read parse
and select Redis and the Ray workers.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ui.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_services_and_their_references_exist():
    spec = compose()
    services = spec["services"]
    assert {"redis", "ray-head", "ray-gpu-worker", "ray-deploy", "app-1", "app-2", "proxy"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert isinstance(service.get("command", []), (list, str)), name
        depends = service.get("depends_on", [])
        for other in (depends if isinstance(depends, list) else depends.keys()):
            assert other in services, f"{name} depends on unknown service {other}"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts missing {source}"
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["proxy"]["ports"] == ["8501:80"]
    for app in ("app-1", "app-2"):
        assert services[app]["environment"]["CIRCUIT_EXPLORER_SETTINGS"] == "/app/settings.scale.toml"
        assert "ray-head:6380" in " ".join(services[app]["command"])


def test_proxy_is_sticky_and_passes_the_websocket_to_both_replicas():
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream circuit_explorer \{(.*?)\}", conf, re.S).group(1)
    assert "ip_hash;" in upstream
    assert re.findall(r"server (app-\d):8501", upstream) == ["app-1", "app-2"]
    stream = re.search(r"location /_stcore/stream \{(.*?)\}", conf, re.S).group(1)
    assert "proxy_set_header Upgrade $http_upgrade;" in stream and "proxy_read_timeout" in stream


def test_redis_is_a_bounded_lru_cache():
    conf = dict(line.split(None, 1) for line in (DEPLOY / "redis.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert conf["maxmemory-policy"] == "allkeys-lru" and conf["maxmemory"].endswith(("gb", "mb"))


def test_replica_settings_select_redis_and_the_ray_workers():
    settings = load_settings(DEPLOY / "settings.scale.toml")
    assert settings.cache_backend == "redis" and settings.redis_url == "redis://redis:6379/0"
    assert settings.compute_backend == "ray" and settings.ray_app == "circuit-explorer"
    assert settings.trust_forwarded_for and settings.runs_per_minute_per_address > 0
    deploy_cmd = " ".join(compose()["services"]["ray-deploy"]["command"])
    assert f"--app {settings.ray_app}" in deploy_cmd
