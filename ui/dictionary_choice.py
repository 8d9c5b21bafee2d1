"""Which feature dictionary a page uses: the ``[features]`` settings' entries for the loaded model (demo mode:
only those), or, where the settings allow free-text models, a path or Hub name typed in.

Each chosen dictionary loads once per server process into the model pool (``ModelPool.get_dictionary``, so
its bytes count in the pool's memory budget), checked to fit the model; a failure is a message naming the
file and the mismatch, and nothing half-loaded stays. The page shows the dictionary's kind (transcoder, skip
transcoder, cross-layer transcoder, SAE) and source under the choice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from collections.abc import Callable
from typing import Any

import streamlit as st

from lens_core.features import FeaturesUnavailable, load_dictionary
from lens_core.features.transcoder import Transcoder, TranscoderSet
from lens_core.features.dictionaries import dictionary_kind
from lens_core.features.per_layer import dictionary_layers
from ui import state
from ui.errors import md_escape
from ui.feature_settings import BUNDLED, DictionaryEntry

KEY = "dictionary"
SOURCE_KEY = "dictionary_source"
TYPED = "Another dictionary (path or Hub name)…"

_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class Chosen:
    dictionary: Any  # TranscoderSet, CrossLayerTranscoder, ... (None: not available, see ``why``)
    fingerprint: str  # keys the result cache ("" without a dictionary)
    entry: DictionaryEntry | None
    kind: str = ""
    why: str = ""  # why there is no dictionary, in words

    @property
    def bundled(self) -> bool:
        return self.entry is not None and self.entry.source == BUNDLED

    @property
    def other(self) -> bool:
        """A dictionary other than the bundled transcoders was chosen (no bundled dashboards; scripts load it)."""
        return self.entry is not None and not self.bundled

    def run_kwargs(self) -> dict:
        """What an experiment call needs beside its request: nothing for the bundled transcoders (the experiments
        load them themselves, also on remote workers), else the dictionary."""
        return {} if self.bundled or self.dictionary is None else {"transcoders": self.dictionary}


def fingerprint(dictionary: Any) -> str:
    """sha256 over the dictionary's kind, configuration and tensors (cached per loaded object)."""
    try:
        return _FINGERPRINTS[dictionary]
    except (KeyError, TypeError):
        pass
    if callable(getattr(dictionary, "fingerprint", None)):
        value = dictionary.fingerprint()
    else:
        digest = hashlib.sha256(dictionary_kind(dictionary).encode())
        for name in ("activation", "k", "hook_in_name", "hook_out_name"):
            digest.update(json.dumps([name, getattr(dictionary, name, None)]).encode())
        for name, tensor in sorted(dictionary.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        value = digest.hexdigest()
    try:
        _FINGERPRINTS[dictionary] = value
    except TypeError:
        pass
    return value


def _load(ctx, source: str, pool) -> Any:
    name = f"{ctx.model_name}|{ctx.dtype}|{ctx.device}|{source}"
    return pool.get_dictionary(name, lambda: as_layered(load_dictionary(source, ctx.model), source))


def as_layered(dictionary: Any, source: str = "") -> Any:
    """A lone transcoder or SAE (one Gemma Scope, Gemma Scope 2 or SAELens file) as a set of its one layer, the
    form the pages read layer by layer; sets and cross-layer transcoders unchanged."""
    if not isinstance(dictionary, Transcoder):
        return dictionary
    layer = int(dictionary.cfg.layer)
    source = getattr(dictionary, "source", "") or source
    if layer < 0:
        raise FeaturesUnavailable(f"{source or 'this dictionary'}: its hook point "
                                  f"{dictionary.cfg.hook_in!r} is not in a layer (blocks.N...): the pages read features layer by layer")
    return TranscoderSet({layer: dictionary}, source=source)


def kind_title(kind: str) -> str:
    """'SAE' stays 'SAE', 'skip transcoder' -> 'Skip transcoder'."""
    return kind[:1].upper() + kind[1:]


def choose_dictionary(ctx, bundled: Callable[[], tuple[Any, str]], where=st) -> Chosen:
    """The page's dictionary (a choice in ``where`` when there is one to make). ``bundled()`` gives the bundled
    transcoders as (set, fingerprint) or (None, why not)."""
    settings = ctx.settings
    listed = list(settings.dictionaries_for(ctx.model_name))
    entries = listed or [DictionaryEntry(BUNDLED)]  # none listed: the bundled transcoders if the model has them
    typed_ok = settings.arbitrary_models_allowed
    titles = [e.title for e in entries] + ([TYPED] if typed_ok else [])
    title = titles[0] if len(titles) == 1 else state.selectbox("Feature dictionary", titles, key=KEY,
                                                               default=titles[0], where=where)
    if title == TYPED:
        source = state.text_input("Dictionary (local path or Hub name)", key=SOURCE_KEY, where=where,
                                  placeholder="e.g. /data/transcoders/gpt2 or mntss/clt-gpt2").strip()
        if not source:
            return Chosen(None, "", None, why="type a dictionary's local path or Hub name")
        entry = DictionaryEntry(source)
    else:
        entry = entries[titles.index(title)]
    if entry.source == BUNDLED:
        tset, reason = bundled()
        if tset is None:
            if not listed:
                reason += f" (or list the dictionaries of {ctx.model_name!r} in the settings' [features] table)"
            return Chosen(None, "", entry, why=reason)
        chosen = Chosen(tset, reason, entry, dictionary_kind(tset))
    else:
        from ui.model import get_pool

        try:
            dictionary = _load(ctx, entry.source, get_pool(settings))
        except FeaturesUnavailable as exc:
            return Chosen(None, "", entry, why=str(exc))
        chosen = Chosen(dictionary, fingerprint(dictionary), entry, dictionary_kind(dictionary))
    where.caption(md_escape(f"{kind_title(chosen.kind)} · source: {entry.source if not chosen.bundled else 'bundled with the model'}"
                            + coverage(chosen.dictionary, ctx.model.cfg.n_layers)))
    return chosen


def coverage(dictionary: Any, n_layers: int) -> str:
    """'' when the dictionary has features in every layer of the model, else which layers it covers (a one-file
    transcoder, or a set with a layer file missing, is not silently a whole set)."""
    layers = dictionary_layers(dictionary)
    if sorted(layers) == list(range(n_layers)):
        return ""
    return f" · features in layer(s) {sorted(layers)} only, of the model's {n_layers} (0..{n_layers - 1})"
