"""SAEs and transcoders in SAELens's on-disk format: ``cfg.json`` + ``sae_weights.safetensors``.

By local directory, or by Hugging Face Hub repository (+ the SAE's folder inside it, SAELens's
``sae_id``), downloaded with ``huggingface_hub``. Both config generations are read: the older flat
keys (``hook_point``/``hook_name``, ``hook_layer``, ``activation_fn_str``, ``activation_fn_kwargs``) and
the newer ``architecture`` + ``metadata``/``meta`` block.

Supported: architectures "standard" (ReLU), "topk", "jumprelu", "transcoder", "jumprelu_transcoder",
with ``normalize_activations`` "none" (an older fine-tuning ``scaling_factor`` is folded into ``W_dec``).
Anything else (gated SAEs, skip transcoders, per-input normalisation, hook_z reshaping) raises
FeaturesUnavailable naming what is missing, rather than loading something that computes otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .files import read_json_object, require_files
from .transcoder import FeaturesUnavailable, Transcoder, TranscoderConfig, build_transcoder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_LAYER = re.compile(r"blocks\.(\d+)\.")
_ACTIVATION = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu",
               "transcoder": "relu", "jumprelu_transcoder": "jumprelu"}


def _hub_files(repo: str, sae_id: Optional[str], revision: Optional[str]) -> Path:
    prefix = f"{sae_id.strip('/')}/" if sae_id else ""
    try:
        from huggingface_hub import hf_hub_download

        cfg = hf_hub_download(repo, f"{prefix}{CFG_FILE}", revision=revision)
        hf_hub_download(repo, f"{prefix}{WEIGHTS_FILE}", revision=revision)
    except Exception as exc:  # offline, unknown repository or file, gated: all end here
        raise FeaturesUnavailable(
            f"could not fetch {prefix}{CFG_FILE} and {WEIGHTS_FILE} from the Hub repository {repo!r} "
            f"({type(exc).__name__}: {exc}). Check the name and the network, or pass a local directory.") from exc
    return Path(cfg).parent


def _config(raw: Mapping[str, Any], source: str) -> tuple[TranscoderConfig, bool]:
    """(our config, apply_b_dec_to_input) from a SAELens cfg dict."""
    meta = dict(raw.get("metadata") or raw.get("meta") or {})
    arch = raw.get("architecture")
    act = raw.get("activation_fn_str") or raw.get("activation_fn")
    if arch is None:
        arch = "topk" if act == "topk" else "standard"
    if arch not in _ACTIVATION or (arch == "standard" and act not in (None, "relu")):
        raise FeaturesUnavailable(f"{source}: SAE architecture {arch!r} (activation {act!r}) is not supported; "
                                  f"supported: {sorted(_ACTIVATION)}")
    norm = raw.get("normalize_activations") or "none"
    if norm != "none":
        raise FeaturesUnavailable(f"{source}: normalize_activations={norm!r} is not supported (only 'none')")
    if (raw.get("reshape_activations") or "none") != "none" or raw.get("hook_head_index") is not None:
        raise FeaturesUnavailable(f"{source}: per-head SAEs (hook_z reshaping or a head index) are not supported")
    hook_in = raw.get("hook_name") or meta.get("hook_name") or raw.get("hook_point")
    if not hook_in:
        raise FeaturesUnavailable(f"{source}: cfg.json names no hook point (hook_name)")
    hook_out = raw.get("hook_name_out") or meta.get("hook_name_out") or hook_in
    layer = raw.get("hook_layer", meta.get("hook_layer"))
    if layer is None:
        match = _LAYER.match(hook_in)
        layer = int(match.group(1)) if match else -1
    kwargs = raw.get("activation_fn_kwargs") or {}
    k = raw.get("k", kwargs.get("k"))
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
        d_out = int(raw.get("d_out") or d_in)
    except (KeyError, TypeError, ValueError) as exc:
        raise FeaturesUnavailable(f"{source}: cfg.json lacks a valid d_in/d_sae ({exc})") from None
    cfg = TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_out, layer=int(layer), hook_in=hook_in, hook_out=hook_out,
                           activation=_ACTIVATION[arch], k=int(k) if k is not None else None)
    transcoder = hook_out != hook_in or arch.endswith("transcoder")
    return cfg, bool(raw.get("apply_b_dec_to_input", True)) and not transcoder


def load_saelens(path_or_repo: Union[str, Path], sae_id: Optional[str] = None, revision: Optional[str] = None,
                 model: Any = None) -> Transcoder:
    """One SAE/transcoder in SAELens format; with ``model``, also checked to fit it (hook point, widths)."""
    directory = Path(path_or_repo).expanduser()
    if sae_id and directory.is_dir():
        directory = directory / sae_id
    if not directory.is_dir():
        if Path(path_or_repo).expanduser().is_absolute() or str(path_or_repo).startswith((".", "~")):
            raise FeaturesUnavailable(f"no SAE directory at {str(path_or_repo)!r}")
        directory = _hub_files(str(path_or_repo), sae_id, revision)
    source = str(directory)
    cfg_path, weights_path = directory / CFG_FILE, directory / WEIGHTS_FILE
    require_files("SAE", cfg_path, weights_path)
    raw = read_json_object(cfg_path)
    cfg, b_dec_to_input = _config(raw, source)
    try:
        from safetensors.torch import load_file

        tensors = dict(load_file(str(weights_path)))
    except Exception as exc:  # corrupt or truncated
        raise FeaturesUnavailable(f"cannot read {weights_path} (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    if "W_skip" in tensors or "b_gate" in tensors:
        raise FeaturesUnavailable(f"{source}: skip-connection and gated SAEs are not supported")
    scale = tensors.pop("scaling_factor", None)
    if scale is not None:  # older SAELens: decode(a) = (a * scaling_factor) @ W_dec + b_dec; fold into W_dec rows
        if scale.shape != (cfg.d_sae,) or "W_dec" not in tensors:
            raise FeaturesUnavailable(f"{source}: scaling_factor has shape {tuple(scale.shape)}, expected ({cfg.d_sae},)")
        tensors["W_dec"] = tensors["W_dec"] * scale[:, None]
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    if b_dec_to_input and "b_dec" in tensors:
        tensors["b_in"] = tensors["b_dec"]
    if cfg.activation == "jumprelu" and "threshold" not in tensors:
        raise FeaturesUnavailable(f"{source}: a JumpReLU SAE needs a 'threshold' tensor")
    tc = build_transcoder(cfg, tensors, source)
    if model is not None:
        tc.check_fits(model)
        tc.to(device=model.cfg.device, dtype=model.cfg.dtype)
    return tc


def save_saelens(tc: Transcoder, directory: Union[str, Path], model_name: Optional[str] = None) -> Path:
    """Write ``tc`` in SAELens's format (newer keys), so SAELens and this module can read it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = tc.cfg
    is_sae = cfg.is_sae
    if is_sae and not (torch.equal(tc.b_in, tc.b_dec) or not tc.b_in.any()):
        raise FeaturesUnavailable("SAELens stores one decoder bias: b_in must be zero or equal to b_dec")
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[cfg.activation]
    if not is_sae:
        if cfg.activation == "topk":
            raise FeaturesUnavailable("SAELens has no TopK transcoder architecture to save this one as")
        arch = "transcoder" if cfg.activation == "relu" else "jumprelu_transcoder"
    raw: dict[str, Any] = {"architecture": arch, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": bool(is_sae and tc.b_in.any()), "normalize_activations": "none",
                           "reshape_activations": "none",
                           "metadata": {"model_name": model_name, "hook_name": cfg.hook_in, "hook_layer": cfg.layer}}
    if cfg.activation == "topk":
        raw["k"] = cfg.k
    if not is_sae:
        raw.update({"d_out": cfg.d_out, "hook_name_out": cfg.hook_out, "hook_layer_out": cfg.layer})
    tensors = {name: getattr(tc, name).detach().float().cpu().contiguous() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if cfg.activation == "jumprelu":
        tensors["threshold"] = tc.threshold.detach().float().cpu().contiguous()
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CFG_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    return directory
