"""Reading a dictionary's files: every failure is a :class:`FeaturesUnavailable` that names the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any



class FeaturesUnavailable(ValueError):
    """Transcoders/SAEs could not be loaded or do not fit the model; the message says why."""


def require_files(what: str, *paths: Path) -> None:
    """Raise, naming the first missing one, unless every path is a file (``what``: "SAE", "transcoder"...)."""
    for path in paths:
        if not Path(path).is_file():
            raise FeaturesUnavailable(f"missing {what} file {path}")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; unreadable, malformed or not an object: a message naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FeaturesUnavailable(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise FeaturesUnavailable(f"{path} is not a JSON object")
    return value
