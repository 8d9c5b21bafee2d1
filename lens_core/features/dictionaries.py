"""``load_dictionary``: any supported feature dictionary, by local path or Hub name, checked against a model.

Recognised (a directory, a file, or the same on the Hub):

============================  ==============================================================  ====================
what is there                 format                                                          result
============================  ==============================================================  ====================
``config.yaml``               circuit-tracer transcoder set or cross-layer transcoder         TranscoderSet / CLT
``W_enc_0.safetensors``       circuit-tracer cross-layer transcoder (no config: default hooks) CrossLayerTranscoder
``config.json`` (tagged)      this project's transcoders                                      TranscoderSet
``cfg.json``                  SAELens SAE or transcoder                                       Transcoder
``params.npz`` / ``*.npz``    Gemma Scope transcoder                                          Transcoder
``*.safetensors``             one circuit-tracer / Gemma Scope 2 transcoder file              Transcoder
============================  ==============================================================  ====================

Anything else raises FeaturesUnavailable naming the path and listing what it holds. With ``model``,
the dictionary is checked to fit it (layer count, hook points, widths; the message names the file),
its weights are in the model's dtype and on its device. Safetensors files are memory-mapped when
``lazy`` and already in that dtype on a CPU model (see ``mmap_io``); npz, SAELens and the project's
own files are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from . import circuit_tracer_io as ct
from . import gemma_scope, hub
from .assemble import fit_error
from .clt import CrossLayerTranscoder
from .skip import SkipTranscoder
from .transcoder import CONFIG_FILE, FeaturesUnavailable, Transcoder, TranscoderSet

Dictionary = Union[TranscoderSet, Transcoder, CrossLayerTranscoder]


def dictionary_kind(dictionary: Any) -> str:
    """'cross-layer transcoder', 'skip transcoder', 'SAE' or 'transcoder'."""
    if isinstance(dictionary, CrossLayerTranscoder):
        return "cross-layer transcoder"
    members = list(dictionary) if isinstance(dictionary, TranscoderSet) else [dictionary]
    if any(isinstance(m, SkipTranscoder) for m in members):
        return "skip transcoder"
    if all(m.cfg.is_sae for m in members):
        return "SAE"
    return "transcoder"


def _dtype(model: Any, dtype: Optional[torch.dtype]) -> torch.dtype:
    if dtype is not None:
        return dtype
    value = getattr(getattr(model, "cfg", None), "dtype", None) if model is not None else None
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def _read_local(path: Path, dtype: torch.dtype, lazy: bool, layer: Optional[int], hooks: dict) -> Dictionary:
    from .saelens import load_saelens
    from .transcoder import load_transcoders

    if path.is_file():
        if path.name in ct.CONFIG_NAMES:
            return _read_ct_config(path, dtype, lazy)
        if path.suffix == ".npz":
            return gemma_scope.read_npz(path, layer, dtype, **hooks)
        if path.suffix == ".safetensors":
            config = {"feature_input_hook": hooks.get("hook_in", gemma_scope.DEFAULT_HOOK_IN),
                      "feature_output_hook": hooks.get("hook_out", gemma_scope.DEFAULT_HOOK_OUT)}
            return ct.read_layer_file(path, gemma_scope.layer_from_path(path, layer), config, dtype, lazy)
        raise FeaturesUnavailable(f"unknown dictionary format: {path} (expected config.yaml, .npz or .safetensors)")
    if not path.is_dir():
        raise FeaturesUnavailable(f"no dictionary at {str(path)!r}")
    for name in ct.CONFIG_NAMES:
        if (path / name).is_file():
            return _read_ct_config(path / name, dtype, lazy)
    if (path / "W_enc_0.safetensors").is_file():
        names = {"hook_in": "feature_input_hook", "hook_out": "feature_output_hook"}
        return ct.read_clt(path, {names[k]: v for k, v in hooks.items()}, dtype, lazy)
    if (path / CONFIG_FILE).is_file():
        return load_transcoders(path)
    if (path / "cfg.json").is_file():
        return load_saelens(path)
    if (path / "params.npz").is_file():
        return gemma_scope.read_npz(path / "params.npz", layer, dtype, **hooks)
    held = sorted(p.name for p in path.iterdir())[:12]
    raise FeaturesUnavailable(f"unknown dictionary format in {path}: expected config.yaml (circuit-tracer), "
                              f"W_enc_0.safetensors (cross-layer transcoder), config.json, cfg.json (SAELens) or "
                              f"params.npz (Gemma Scope); it holds {held}")


def _read_ct_config(config_path: Path, dtype: torch.dtype, lazy: bool, hub_name: Optional[hub.HubName] = None) -> Dictionary:
    config = ct.read_config(config_path)
    directory = config_path.parent
    source = str(config_path)
    if config["model_kind"] == "cross_layer_transcoder":
        if hub_name is not None:
            sub = f"{hub_name.path.strip('/')}/" if hub_name.path else ""
            directory = hub.snapshot(hub_name.repo_id, [f"{sub}*.safetensors"], hub_name.revision) / sub
        return ct.read_clt(directory, config, dtype, lazy)
    if hub_name is not None and config.get("transcoders") is None:
        sub = f"{hub_name.path.strip('/')}/" if hub_name.path else ""
        directory = hub.snapshot(hub_name.repo_id, [f"{sub}layer_*.safetensors"], hub_name.revision) / sub
    return ct.read_transcoder_set(directory, config, dtype, lazy, fetch_uri=hub.download_uri, source=source)


def _read_hub(text: str, dtype: torch.dtype, lazy: bool, layer: Optional[int], hooks: dict) -> Dictionary:
    name = hub.parse_hub_name(text)
    if name.path and name.path.endswith((".npz", ".safetensors", ".yaml", ".yml")):
        return _read_local(hub.download(name.repo_id, name.path, name.revision), dtype, lazy,
                           layer if layer is not None else _layer_of(name.path), hooks)
    sub = f"{name.path.strip('/')}/" if name.path else ""
    try:
        config_path = hub.download(name.repo_id, f"{sub}config.yaml", name.revision)
    except FeaturesUnavailable as first:
        from .saelens import load_saelens

        try:  # not a circuit-tracer repository: perhaps SAELens's layout
            return load_saelens(name.repo_id, sae_id=name.path, revision=name.revision)
        except FeaturesUnavailable:
            raise first from None
    return _read_ct_config(config_path, dtype, lazy, hub_name=name)


def _layer_of(path: str) -> Optional[int]:
    found = gemma_scope._LAYER.findall(path)
    return int(found[-1]) if found else None


def load_dictionary(source: Union[str, Path], model: Any = None, *, layer: Optional[int] = None,
                    hook_in: Optional[str] = None, hook_out: Optional[str] = None, lazy: bool = True,
                    dtype: Optional[torch.dtype] = None) -> Dictionary:
    """A feature dictionary from a local path or a Hub name; with ``model``, checked to fit it.

    ``layer``: for a single transcoder file whose path does not say (``layer_N``). ``hook_in`` / ``hook_out``:
    per-layer hook names (``ln2.hook_normalized``, ``hook_mlp_out`` by default) for files that do not name them.
    """
    hooks = {k: v for k, v in (("hook_in", hook_in), ("hook_out", hook_out)) if v}
    target = _dtype(model, dtype)
    path = Path(str(source)).expanduser()
    if path.exists():
        dictionary = _read_local(path, target, lazy, layer, hooks)
        label = str(path)
    elif isinstance(source, str) and hub.looks_like_hub_name(source):
        dictionary = _read_hub(source, target, lazy, layer, hooks)
        label = source
    else:
        raise FeaturesUnavailable(f"no dictionary at {str(source)!r} (neither an existing path nor a Hub name)")
    if model is not None:
        check_fits(dictionary, model, getattr(dictionary, "source", "") or label)
        dictionary = dictionary.to(device=model.cfg.device, dtype=target)
    return dictionary


def check_fits(dictionary: Dictionary, model: Any, source: str) -> None:
    """FeaturesUnavailable (naming ``source`` and the mismatch) unless the dictionary fits ``model``."""
    n_model = model.cfg.n_layers
    if isinstance(dictionary, TranscoderSet):
        beyond = [layer for layer in dictionary.layers if not 0 <= layer < n_model]
        if beyond:
            raise FeaturesUnavailable(f"{source}: the dictionary has transcoders for layers {dictionary.layers}, "
                                      f"the model has {n_model} layers (0..{n_model - 1})")
        for tc in dictionary:  # the file of the layer that does not fit, where it is known
            try:
                tc.check_fits(model)
            except FeaturesUnavailable as exc:
                raise fit_error(getattr(tc, "source", "") or source, exc) from None
    try:
        dictionary.check_fits(model)
    except FeaturesUnavailable as exc:
        raise fit_error(source, exc) from None
