"""circuit-tracer's dictionaries on disk (as its 0.5 release reads them), read into this project's classes.

A ``config.yaml`` at the root (or in a sub-folder) of a directory or Hub repository::

    model_kind: transcoder_set            # or cross_layer_transcoder
    feature_input_hook: mlp.hook_in       # per-layer hook names (mlp.hook_in / mlp.hook_out / hook_resid_mid / ...)
    feature_output_hook: mlp.hook_out
    activation: relu                      # optional: relu, jump_relu / jumprelu, topk (+ k), batchtopk (+ k)
    k: 64                                 # topk/batchtopk only
    transcoders:                          # optional: one file per layer, in layer order
      - hf://owner/repo/layer_0.safetensors   # or a path (relative to the config's folder)
      - ...

* ``transcoder_set`` without ``transcoders``: the files ``layer_{i}.safetensors`` beside the config.
  Each file: ``W_enc`` [d_sae, d_in], ``W_dec`` [d_sae, d_out], ``b_enc`` [d_sae], ``b_dec`` [d_out],
  optionally ``activation_function.threshold`` [d_sae] (JumpReLU when no activation is named),
  ``W_skip`` [d_out, d_in] (a skip transcoder: ``+ x @ W_skip.T``) and ``k`` (a scalar).
  A listed ``.npz`` file is a Gemma Scope ``params.npz``; a safetensors file with lower-case
  ``w_enc`` is Gemma Scope 2 (see ``gemma_scope.py``).
* ``cross_layer_transcoder``: ``W_enc_{i}.safetensors`` (``W_enc_{i}`` [d_sae, d_in], ``b_enc_{i}``,
  ``b_dec_{i}``, optionally ``threshold_{i}``, and this project's optional ``W_skip_{i}`` [d_in, d_out])
  and ``W_dec_{i}.safetensors`` (``W_dec_{i}`` [d_sae, n_layers - i, d_out]) for every layer ``i``.

Hook names: circuit-tracer's ``mlp.hook_in`` is ``ln2.hook_normalized`` here and ``mlp.hook_out`` is
``hook_mlp_out``; other names are used as they are (``blocks.{i}.`` + name). Safetensors files are
memory-mapped when ``lazy`` (the default).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import gemma_scope
from .assemble import assemble_transcoder
from .clt import CrossLayerTranscoder
from .mmap_io import open_safetensors
from .skip import SkipTranscoder
from .transcoder import FeaturesUnavailable, Transcoder, TranscoderConfig, TranscoderSet

CONFIG_NAMES = ("config.yaml", "config.yml")
KINDS = ("transcoder_set", "cross_layer_transcoder")
HOOK_ALIASES = {"mlp.hook_in": "ln2.hook_normalized", "mlp.hook_out": "hook_mlp_out"}
_ACTIVATIONS = {"relu": "relu", "jump_relu": "jumprelu", "jumprelu": "jumprelu", "topk": "topk", "top_k": "topk",
                "batchtopk": "batchtopk", "batch_topk": "batchtopk"}
_LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
_ENC_FILE = re.compile(r"^W_enc_(\d+)\.safetensors$")


def hook_name(name: Any, source: str, key: str) -> str:
    if not isinstance(name, str) or not name:
        raise FeaturesUnavailable(f"{source}: {key} must name a hook point, got {name!r}")
    name = re.sub(r"^blocks\.\d+\.", "", name)
    return HOOK_ALIASES.get(name, name)


def read_config(path: Path) -> dict:
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FeaturesUnavailable(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise FeaturesUnavailable(f"{path} is not a circuit-tracer config (not a mapping)")
    kind = config.get("model_kind")
    if kind not in KINDS:
        raise FeaturesUnavailable(f"{path}: unknown model_kind {kind!r}; circuit-tracer configs have one of {KINDS}")
    for key in ("feature_input_hook", "feature_output_hook"):
        config[key] = hook_name(config.get(key), str(path), key)
    activation = config.get("activation")
    if activation is not None and activation not in _ACTIVATIONS:
        raise FeaturesUnavailable(f"{path}: activation {activation!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    return config


def _activation(config: dict, tensors: dict, source: str) -> tuple[str, Optional[int]]:
    named = config.get("activation")
    activation = _ACTIVATIONS[named] if named else ("jumprelu" if "threshold" in tensors else "relu")
    k = config.get("k")
    if k is None and "k" in tensors:
        k = int(tensors["k"].item())
    if activation in ("topk", "batchtopk") and k is None:
        raise FeaturesUnavailable(f"{source}: a {activation} transcoder needs k (in config.yaml or as a 'k' tensor)")
    return activation, (int(k) if k is not None else None)


def read_layer_file(path: Path, layer: int, config: dict, dtype: torch.dtype, lazy: bool) -> Transcoder:
    """One per-layer transcoder file (circuit-tracer, Gemma Scope npz or Gemma Scope 2 layout)."""
    hooks = {"hook_in": config["feature_input_hook"], "hook_out": config["feature_output_hook"]}
    if path.suffix == ".npz":
        return gemma_scope.read_npz(path, layer, dtype, **hooks)
    raw = open_safetensors(path, lazy)
    if "w_enc" in raw:
        return gemma_scope.jumprelu_transcoder(gemma_scope.from_gemma_scope_2(raw), layer, str(path), dtype=dtype, **hooks)
    source = str(path)
    missing = [name for name in ("W_enc", "W_dec", "b_enc", "b_dec") if name not in raw]
    if missing:
        raise FeaturesUnavailable(f"{source}: not a circuit-tracer transcoder file, it lacks {missing} (has {sorted(raw)})")
    tensors = {"W_enc": raw["W_enc"].T, "W_dec": raw["W_dec"], "b_enc": raw["b_enc"], "b_dec": raw["b_dec"]}
    if "activation_function.threshold" in raw:
        tensors["threshold"] = raw["activation_function.threshold"].reshape(-1)
    if "W_skip" in raw:
        tensors["W_skip"] = raw["W_skip"].T
    activation, k = _activation(config, {**raw, **tensors}, source)
    if raw["W_enc"].dim() != 2 or raw["b_dec"].dim() != 1:
        raise FeaturesUnavailable(f"{source}: W_enc has shape {tuple(raw['W_enc'].shape)} and b_dec "
                                  f"{tuple(raw['b_dec'].shape)}; expected [d_sae, d_in] and [d_out]")
    d_sae, d_in = tuple(raw["W_enc"].shape)
    cfg = TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=int(raw["b_dec"].shape[0]), layer=layer,
                           hook_in=f"blocks.{layer}.{hooks['hook_in']}", hook_out=f"blocks.{layer}.{hooks['hook_out']}",
                           activation=activation, k=k)
    return assemble_transcoder(cfg, tensors, source, dtype, SkipTranscoder if "W_skip" in tensors else Transcoder)


def _numbered(directory: Path, pattern: re.Pattern, what: str) -> list[Path]:
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := pattern.match(p.name))} if directory.is_dir() else {}
    if not found:
        raise FeaturesUnavailable(f"{directory}: no {what} files found")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise FeaturesUnavailable(f"{directory}: {what} files are missing for layer(s) {missing}")
    return [found[i] for i in range(len(found))]


def read_transcoder_set(directory: Path, config: dict, dtype: torch.dtype = torch.float32, lazy: bool = True,
                        fetch_uri: Optional[Callable[[str], Path]] = None, source: str = "") -> TranscoderSet:
    entries = config.get("transcoders")
    if entries is None:
        paths = _numbered(directory, _LAYER_FILE, "layer_{i}.safetensors")
    else:
        if not isinstance(entries, list) or not entries:
            raise FeaturesUnavailable(f"{source}: 'transcoders' must be a list of files, one per layer")
        paths = []
        for entry in entries:
            if str(entry).startswith("hf://"):
                if fetch_uri is None:
                    raise FeaturesUnavailable(f"{source}: {entry} is on the Hub; no downloader was given")
                paths.append(fetch_uri(str(entry)))
            else:
                path = Path(str(entry)).expanduser()
                paths.append(path if path.is_absolute() else directory / path)
    transcoders = {layer: read_layer_file(path, layer, config, dtype, lazy) for layer, path in enumerate(paths)}
    return TranscoderSet(transcoders, model_name=config.get("model_name"), source=source or str(directory))


def read_clt(directory: Path, config: Optional[dict] = None, dtype: torch.dtype = torch.float32,
             lazy: bool = True) -> CrossLayerTranscoder:
    """A cross-layer transcoder directory (``W_enc_{i}`` / ``W_dec_{i}`` files); hooks from ``config``."""
    config = dict(config or {})
    hook_in = config.get("feature_input_hook") or "ln2.hook_normalized"
    hook_out = config.get("feature_output_hook") or "hook_mlp_out"
    enc_files = _numbered(directory, _ENC_FILE, "W_enc_{i}.safetensors")
    W_enc, b_enc, b_dec, threshold, W_skip, W_dec = [], [], [], [], [], []
    for i, path in enumerate(enc_files):
        enc = open_safetensors(path, lazy)
        missing = [f"{name}_{i}" for name in ("W_enc", "b_enc", "b_dec") if f"{name}_{i}" not in enc]
        if missing:
            raise FeaturesUnavailable(f"{path}: lacks {missing} (has {sorted(enc)})")
        W_enc.append(enc[f"W_enc_{i}"].to(dtype).T)
        b_enc.append(enc[f"b_enc_{i}"].to(dtype))
        b_dec.append(enc[f"b_dec_{i}"].to(dtype))
        if f"threshold_{i}" in enc:
            threshold.append(enc[f"threshold_{i}"].to(dtype).reshape(-1))
        if f"W_skip_{i}" in enc:
            W_skip.append(enc[f"W_skip_{i}"].to(dtype))
        dec_path = directory / f"W_dec_{i}.safetensors"
        dec = open_safetensors(dec_path, lazy)
        if f"W_dec_{i}" not in dec:
            raise FeaturesUnavailable(f"{dec_path}: lacks W_dec_{i} (has {sorted(dec)})")
        W_dec.append(dec[f"W_dec_{i}"].to(dtype))
    for name, values in (("threshold", threshold), ("W_skip", W_skip)):
        if values and len(values) != len(enc_files):
            raise FeaturesUnavailable(f"{directory}: {name} is present for {len(values)} of {len(enc_files)} layers")
    shapes = {tuple(b.shape) for b in b_dec}
    if len(shapes) != 1:
        raise FeaturesUnavailable(f"{directory}: the layers' b_dec have different shapes {sorted(shapes)}")
    activation, k = _activation(config, {"threshold": True} if threshold else {}, str(directory))
    return CrossLayerTranscoder(W_enc, b_enc, W_dec, torch.stack(b_dec), hook_in=hook_in, hook_out=hook_out,
                                activation=activation, k=k, threshold=threshold or None, W_skip=W_skip or None,
                                source=str(directory))
