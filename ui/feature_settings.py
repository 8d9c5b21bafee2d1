"""The ``[features]`` settings table: which feature dictionaries the app offers for each model.

Parsed from the same settings file as the rest (:func:`ui.settings.load_settings` calls
:func:`feature_fields`). Each key is a model name as the ``[models]`` allowlist spells it; its value
lists the dictionaries the Features and Attribution graph pages offer for that model, first = default::

    [features]
    default = ["bundled"]
    "google/gemma-2-2b" = [
      { source = "mntss/gemma-scope-transcoders", label = "Gemma Scope transcoders" },
      { source = "/data/dictionaries/gemma-2-2b-clt", label = "our CLT" },
    ]

An entry is a string (the source) or a table with ``source`` and an optional ``label``. A source is
``"bundled"`` (the bundled model's own transcoders), a local path, or a Hub name; the kind
(transcoder, skip transcoder, cross-layer transcoder, SAE) is read from the files when it loads, and
shown beside the source. Without a ``[features]`` table the bundled model offers its transcoders.
In demo mode the pages offer only what the table lists; otherwise, where arbitrary models are
allowed, a page also takes a path or Hub name typed in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

BUNDLED = "bundled"


@dataclasses.dataclass(frozen=True)
class DictionaryEntry:
    source: str  # "bundled", a local path or a Hub name
    label: str = ""

    @property
    def title(self) -> str:
        if self.source == BUNDLED:
            return self.label or "Bundled transcoders"
        return self.label or self.source


DEFAULT_FEATURES = (("default", (DictionaryEntry(BUNDLED),)),)


def _entry(value: Any, where: str, error: type[Exception]) -> DictionaryEntry:
    if isinstance(value, str) and value.strip():
        return DictionaryEntry(value.strip())
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"source", "label"})
        source, label = value.get("source"), value.get("label", "")
        if unknown:
            raise error(f"{where}: unknown key(s) {unknown} (an entry has 'source' and an optional 'label')")
        if not isinstance(source, str) or not source.strip():
            raise error(f"{where}: 'source' must be a non-empty string (\"bundled\", a local path or a Hub name)")
        if not isinstance(label, str):
            raise error(f"{where}: 'label' must be a string, got {label!r}")
        return DictionaryEntry(source.strip(), label.strip())
    raise error(f"{where}: a dictionary is a source string or a table with 'source', got {value!r}")


def feature_fields(raw: dict, where: str, error: type[Exception]) -> dict:
    """The ``feature_dictionaries`` field of :class:`ui.settings.Settings` (model -> entries, as a tuple)."""
    table = raw.get("features")
    if table is None:
        return {"feature_dictionaries": DEFAULT_FEATURES}
    if not isinstance(table, dict):
        raise error(f"{where}: [features] must be a table of model name = [dictionaries]")
    out = []
    for model, entries in table.items():
        if not isinstance(entries, list) or not entries:
            raise error(f"{where}: [features] {model!r} must be a non-empty list of dictionaries")
        parsed = tuple(_entry(e, f"{where}: [features] {model!r}", error) for e in entries)
        sources = [e.source for e in parsed]
        if len(set(sources)) != len(sources):
            raise error(f"{where}: [features] {model!r} lists a source twice: {sources}")
        out.append((str(model), parsed))
    return {"feature_dictionaries": tuple(out)}


def dictionaries_for(feature_dictionaries: tuple, model_name: str) -> tuple[DictionaryEntry, ...]:
    for name, entries in feature_dictionaries:
        if name == model_name:
            return entries
    return ()
