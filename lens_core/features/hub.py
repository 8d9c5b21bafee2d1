"""Hugging Face Hub names for dictionaries, fetched with ``huggingface_hub`` (real downloads; tests stub the client).

Names: ``owner/repo``, ``owner/repo/sub/folder`` or ``owner/repo/path/file.npz``, each optionally with
``@revision``; or circuit-tracer's URIs ``hf://owner/repo/path/file?revision=...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple, Optional, Sequence
from urllib.parse import parse_qs, urlparse

from .transcoder import FeaturesUnavailable

_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]*)?(@[\w./-]+)?$")


class HubName(NamedTuple):
    repo_id: str
    path: Optional[str]  # a folder or file inside the repository
    revision: Optional[str]


def looks_like_hub_name(text: str) -> bool:
    return text.startswith("hf://") or (bool(_NAME.match(text)) and not text.startswith((".", "/", "~")))


def parse_hub_name(text: str) -> HubName:
    if text.startswith("hf://"):
        parsed = urlparse(text)
        parts = parsed.path.lstrip("/").split("/", 1)
        if not parsed.netloc or not parts[0]:
            raise FeaturesUnavailable(f"not a Hugging Face URI: {text!r} (expected hf://owner/repo/path)")
        revision = (parse_qs(parsed.query).get("revision") or [None])[0]
        return HubName(f"{parsed.netloc}/{parts[0]}", parts[1] if len(parts) > 1 and parts[1] else None, revision)
    if not looks_like_hub_name(text):
        raise FeaturesUnavailable(f"{text!r} is neither an existing path nor a Hub name (owner/repo[/path][@revision])")
    name, _, revision = text.partition("@")
    owner, repo, *rest = name.strip("/").split("/")
    return HubName(f"{owner}/{repo}", "/".join(rest) or None, revision or None)


def download(repo_id: str, filename: str, revision: Optional[str] = None) -> Path:
    """One file of a Hub repository, via the local Hub cache; FeaturesUnavailable naming it when that fails."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except Exception as exc:  # offline, unknown repository or file, gated: all end here
        raise FeaturesUnavailable(f"could not fetch {filename} from the Hub repository {repo_id!r} "
                                  f"({type(exc).__name__}: {exc}). Check the name and the network, "
                                  "or pass a local path.") from exc


def snapshot(repo_id: str, patterns: Sequence[str], revision: Optional[str] = None) -> Path:
    """The files of a repository matching ``patterns``, downloaded; the local root of the snapshot."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=list(patterns)))
    except Exception as exc:
        raise FeaturesUnavailable(f"could not fetch {list(patterns)} from the Hub repository {repo_id!r} "
                                  f"({type(exc).__name__}: {exc}). Check the name and the network, "
                                  "or pass a local path.") from exc


def download_uri(uri: str) -> Path:
    name = parse_hub_name(uri)
    if not name.path:
        raise FeaturesUnavailable(f"{uri!r} names a repository, not a file")
    return download(name.repo_id, name.path, name.revision)
