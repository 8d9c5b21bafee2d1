"""Plain result containers shared by the experiments and the disk cache.

Every experiment returns a dataclass that subclasses :class:`ExperimentResult`.
Its fields are either tensors or JSON-able values (str, int, float, bool, None,
and lists/dicts of those: axis labels, token strings, settings). That split is
what lets ``cache_store`` write a result as safetensors + JSON and read it back
without pickle: :meth:`to_parts` and :meth:`from_parts` are exact inverses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

# kind name -> result class; filled by ``__init_subclass__`` so decoding a
# stored result looks its class up by a plain string, never by import path.
RESULT_TYPES: dict[str, type["ExperimentResult"]] = {}


@dataclasses.dataclass
class ExperimentResult:
    kind: ClassVar[str] = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            raise TypeError(f"{cls.__name__} must set a class attribute 'kind'")
        if kind in RESULT_TYPES and RESULT_TYPES[kind] is not cls:
            # Re-importing a module (Streamlit reruns) redefines the class: keep the newest.
            if RESULT_TYPES[kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"result kind {kind!r} is already taken by {RESULT_TYPES[kind].__name__}")
        RESULT_TYPES[kind] = cls

    def to_parts(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Split into (tensors by field name, JSON-able metadata)."""
        tensors: dict[str, torch.Tensor] = {}
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                tensors[field.name] = value.detach().cpu().contiguous()
            else:
                fields[field.name] = value
        return tensors, {"kind": self.kind, "fields": fields}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "ExperimentResult":
        """Rebuild a result from :meth:`to_parts` output (any registered kind)."""
        kind = meta.get("kind")
        target = RESULT_TYPES.get(kind) if cls is ExperimentResult else cls
        if target is None or target.kind != kind:
            raise ValueError(f"unknown or mismatched result kind {kind!r}")
        values = dict(meta.get("fields", {}))
        values.update(tensors)
        names = {f.name for f in dataclasses.fields(target)}
        if set(values) != names:
            raise ValueError(f"stored {kind!r} result has fields {sorted(values)}, expected {sorted(names)}")
        return target(**values)
