"""Random dictionaries written in the publishers' exact on-disk layouts (plain safetensors / numpy / yaml calls)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file


def rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def ct_layer_tensors(g, d_model=128, d_sae=96, jumprelu=False, skip=False):
    """circuit-tracer's per-layer file: W_enc [d_sae, d_model], W_dec [d_sae, d_model]."""
    t = {"W_enc": rand(g, d_sae, d_model, scale=d_model ** -0.5), "W_dec": rand(g, d_sae, d_model, scale=0.1),
         "b_enc": rand(g, d_sae, scale=0.1), "b_dec": rand(g, d_model, scale=0.1)}
    if jumprelu:
        t["activation_function.threshold"] = 0.1 + 0.3 * torch.rand(d_sae, generator=g)
    if skip:
        t["W_skip"] = rand(g, d_model, d_model, scale=0.05)
    return t


def write_ct_set(directory: Path, n_layers=3, listed=False, seed=0, config_extra=None, **kwargs) -> list[dict]:
    """A circuit-tracer transcoder set: config.yaml + layer_{i}.safetensors (or a 'transcoders' list)."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(n_layers):
        t = ct_layer_tensors(g, **kwargs)
        name = f"tc_{i}.safetensors" if listed else f"layer_{i}.safetensors"
        save_file(t, str(directory / name))
        layers.append(t)
    config = {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out",
              "scan_name": "test", **(config_extra or {})}
    if listed:
        config["transcoders"] = [f"tc_{i}.safetensors" for i in range(n_layers)]
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return layers


def write_ct_clt(directory: Path, n_layers=3, d_model=128, d_sae=64, jumprelu=True, seed=0, config=True) -> dict:
    """circuit-tracer's CLT: W_enc_{i}.safetensors (W_enc_i [d_sae, d_model], b_enc_i, b_dec_i, threshold_i) and
    W_dec_{i}.safetensors (W_dec_i [d_sae, n_layers - i, d_model])."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    out = {"W_enc": [], "b_enc": [], "b_dec": [], "threshold": [], "W_dec": []}
    for i in range(n_layers):
        enc = {f"W_enc_{i}": rand(g, d_sae, d_model, scale=d_model ** -0.5), f"b_enc_{i}": rand(g, d_sae, scale=0.1),
               f"b_dec_{i}": rand(g, d_model, scale=0.1)}
        if jumprelu:
            enc[f"threshold_{i}"] = 0.1 + 0.2 * torch.rand(d_sae, generator=g)
        dec = {f"W_dec_{i}": rand(g, d_sae, n_layers - i, d_model, scale=0.1)}
        save_file(enc, str(directory / f"W_enc_{i}.safetensors"))
        save_file(dec, str(directory / f"W_dec_{i}.safetensors"))
        for key in ("W_enc", "b_enc", "b_dec", "threshold"):
            if f"{key}_{i}" in enc:
                out[key].append(enc[f"{key}_{i}"])
        out["W_dec"].append(dec[f"W_dec_{i}"])
    if config:
        (directory / "config.yaml").write_text(yaml.safe_dump({
            "model_kind": "cross_layer_transcoder", "feature_input_hook": "ln2.hook_normalized",
            "feature_output_hook": "hook_mlp_out"}))
    return out


def jumprelu_params(g, d_model: int, d_sae: int, enc: str = "W_enc", dec: str = "W_dec") -> dict:
    """Random JumpReLU encoder/decoder tensors, under the publisher's names for the two matrices."""
    return {enc: rand(g, d_model, d_sae, scale=d_model ** -0.5), dec: rand(g, d_sae, d_model, scale=0.1),
            "b_enc": rand(g, d_sae, scale=0.1), "b_dec": rand(g, d_model, scale=0.1),
            "threshold": 0.1 + 0.3 * torch.rand(d_sae, generator=g)}


def write_gemma_scope_npz(path: Path, d_model=128, d_sae=80, seed=0) -> dict:
    """Gemma Scope params.npz: W_enc [d_model, d_sae], W_dec [d_sae, d_model], b_enc, b_dec, threshold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = jumprelu_params(torch.Generator().manual_seed(seed), d_model, d_sae)
    np.savez(path, **{k: v.numpy() for k, v in t.items()})
    return t


def write_gemma_scope_2(path: Path, d_model=128, d_sae=72, seed=0) -> dict:
    """Gemma Scope 2 safetensors: w_enc [d_model, d_sae], w_dec [d_sae, d_model], affine_skip_connection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    t = jumprelu_params(g, d_model, d_sae, enc="w_enc", dec="w_dec")
    t["affine_skip_connection"] = rand(g, d_model, d_model, scale=0.05)
    save_file(t, str(path))
    return t


def jumprelu(pre, threshold):
    return torch.where(pre > threshold, pre, torch.zeros(()))
