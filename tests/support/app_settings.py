"""The settings file of a local test or benchmark server: the bundled model only, on the CPU, in float32.

``sections`` adds or extends sections (``{"cache": 'backend = "redis"', "auth": "enabled = true"}``):
its lines go under the section's header, after the defaults.
"""

from __future__ import annotations

from pathlib import Path


def settings_toml(cache_dir: Path, max_prompt_tokens: int = 128, **sections: str) -> str:
    blocks = {
        "models": 'allowlist = ["default"]\ndtypes = ["float32"]\ndevices = ["cpu"]',
        "limits": f"max_prompt_tokens = {max_prompt_tokens}\nmax_concurrent_runs_per_device = 2",
        "cache": f"directory = {str(cache_dir)!r}",
    }
    for name, lines in sections.items():
        blocks[name] = (blocks[name] + "\n" + lines) if name in blocks else lines
    return "".join(f"[{name}]\n{lines.strip()}\n\n" for name, lines in blocks.items())


def write_settings(path: Path, cache_dir: Path, max_prompt_tokens: int = 128, **sections: str) -> Path:
    path.write_text(settings_toml(cache_dir, max_prompt_tokens, **sections), encoding="utf-8")
    return path
