"""Transcoders and sparse autoencoders: one module for both.

A transcoder replaces an MLP: it reads the MLP's input (``hook_in``) and predicts the MLP's
output (``hook_out``) through a wide, sparse layer of features. A sparse autoencoder (SAE) is
the special case ``hook_in == hook_out``: it reconstructs the activation it reads.

Axes: ``d_in`` (what the encoder reads), ``d_sae`` (features), ``d_out`` (what the decoder
writes). Weights, TransformerLens/SAELens layout::

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_out]   b_dec [d_out]
    b_in  [d_in]          subtracted from the input before encoding (zeros unless an SAE
                          was trained with its decoder bias applied to its input)
    threshold [d_sae]     JumpReLU only

    pre_acts(x) = (x - b_in) @ W_enc + b_enc        (affine in x)
    encode(x)   = sparsity(pre_acts(x))              [..., d_sae]
    decode(a)   = a @ W_dec + b_dec                  [..., d_out]

Sparsity: "topk" keeps the k largest pre-activations per position (then ReLU), "batchtopk" keeps
the ``k * rows`` largest over every position of the call together (then ReLU; rows = positions in
the batch), "jumprelu" keeps (positive) pre-activations above a per-feature threshold, "relu" is a
plain ReLU.

For the bundled model (``from_pretrained("default")`` with LayerNorm folded, so ``ln2`` has no
weights of its own) layer ``l`` reads ``blocks.{l}.ln2.hook_normalized`` and writes
``blocks.{l}.hook_mlp_out``.

Files (the project's own format, a directory): ``config.json`` (format tag, the model and
weight processing they were trained for, one config per layer) and ``transcoders.safetensors``
(tensors named ``blocks.{layer}.{W_enc|b_enc|W_dec|b_dec|b_in|threshold}``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
from torch import nn

from .files import FeaturesUnavailable, read_json_object, require_files

FORMAT = "circuit-explorer-transcoders"
FORMAT_VERSION = 1
WEIGHTS_FILE = "transcoders.safetensors"
CONFIG_FILE = "config.json"
ACTIVATIONS = ("topk", "batchtopk", "jumprelu", "relu")
DEFAULT_TRANSCODERS_DIR = Path(__file__).resolve().parent.parent / "default_model" / "transcoders"


def mlp_in_hook(layer: int) -> str:
    return f"blocks.{layer}.ln2.hook_normalized"


def mlp_out_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


@dataclasses.dataclass(frozen=True)
class TranscoderConfig:
    d_in: int
    d_sae: int
    d_out: int
    layer: int
    hook_in: str
    hook_out: str
    activation: str = "topk"
    k: Optional[int] = None  # topk only
    threshold: float = 0.0  # jumprelu: the initial/uniform threshold (the per-feature one is a tensor)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise FeaturesUnavailable(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.activation in ("topk", "batchtopk") and not (self.k and 0 < self.k <= self.d_sae):
            raise FeaturesUnavailable(f"a {self.activation} transcoder needs 0 < k <= d_sae ({self.d_sae}), got k={self.k!r}")
        if min(self.d_in, self.d_sae, self.d_out) <= 0:
            raise FeaturesUnavailable(f"widths must be positive: d_in={self.d_in}, d_sae={self.d_sae}, d_out={self.d_out}")

    @property
    def is_sae(self) -> bool:
        return self.hook_in == self.hook_out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TranscoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"d_in", "d_sae", "d_out", "layer", "hook_in", "hook_out"} - set(data)
        if missing:
            raise FeaturesUnavailable(f"transcoder config lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


class Transcoder(nn.Module):
    """One sparse layer of features from ``hook_in`` to ``hook_out`` (an SAE when they are equal)."""

    def __init__(self, cfg: TranscoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_out))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out))
        self.register_buffer("b_in", torch.zeros(cfg.d_in))
        self.register_buffer("threshold", torch.full((cfg.d_sae,), float(cfg.threshold)))

    # ------------------------------------------------------------------ maths
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_sae], affine in x."""
        return (x - self.b_in) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The sparsity nonlinearity applied to pre-activations."""
        return sparsify(pre, self.cfg.activation, self.cfg.k, self.threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> sparse feature activations [..., d_sae]."""
        return self.activate(self.pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """[..., d_sae] -> [..., d_out]."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ checks
    def check_feature(self, feature: int) -> int:
        """The index itself, or a clear error when it is out of range."""
        if not isinstance(feature, int) or isinstance(feature, bool) or not 0 <= feature < self.cfg.d_sae:
            raise FeaturesUnavailable(
                f"feature {feature!r} is out of range: layer {self.cfg.layer} has features 0..{self.cfg.d_sae - 1}")
        return feature

    def check_fits(self, model: Any) -> None:
        """Raise FeaturesUnavailable unless the hook points exist in ``model`` with the widths they expect."""
        hooks = getattr(model, "hook_dict", {})
        for name in (self.cfg.hook_in, self.cfg.hook_out):
            if name not in hooks:
                raise FeaturesUnavailable(f"the model has no hook point {name!r} (layer {self.cfg.layer} "
                                          f"of a {model.cfg.n_layers}-layer model){missing_hook_hint(hooks, name)}")
        widths = {"d_in": (self.cfg.d_in, self.cfg.hook_in), "d_out": (self.cfg.d_out, self.cfg.hook_out)}
        for label, (width, hook) in widths.items():
            expected = hook_width(model, hook)
            if expected is not None and width != expected:
                raise FeaturesUnavailable(f"layer {self.cfg.layer}: {label} is {width} but {hook!r} in this model "
                                          f"has width {expected}")


def missing_hook_hint(hooks: Any, name: str) -> str:
    """Advice for a dictionary reading ``blocks.N.ln2.hook_normalized`` (the MLP's input after its pre-norm, the
    default) on a model without a norm before its MLP (OLMo 2: post-norms only), whose MLP reads hook_resid_mid."""
    if not name.endswith(".ln2.hook_normalized"):
        return ""
    mid = name[: -len("ln2.hook_normalized")] + "hook_resid_mid"
    if mid not in hooks:
        return ""
    return (f"; this model has no norm before its MLP, whose input is {mid!r}: a dictionary trained on it names "
            f"that hook (circuit-tracer's config.yaml: feature_input_hook: hook_resid_mid)")


def sparsify(pre: torch.Tensor, activation: str, k: Optional[int] = None,
             threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One of ACTIVATIONS applied to pre-activations [..., d_sae] (shared by every dictionary kind)."""
    if activation == "topk":
        indices = _top_indices(pre, k)
        return torch.zeros_like(pre).scatter(-1, indices, pre.gather(-1, indices).relu())
    if activation == "batchtopk":  # the k * rows largest entries of the whole call, rows = every leading position
        flat = pre.reshape(-1)
        indices = flat.topk(min(k * (flat.numel() // max(pre.shape[-1], 1)), flat.numel())).indices
        return torch.zeros_like(flat).scatter(0, indices, flat[indices].relu()).reshape(pre.shape)
    if activation == "jumprelu":
        return pre.relu() * (pre > threshold)
    if activation == "relu":
        return pre.relu()
    raise FeaturesUnavailable(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def _top_indices(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries on the last axis, in no particular order.

    Without gradients on CPU, numpy's introselect (argpartition) is 3-5x faster than ``torch.topk`` at these
    widths and picks the same set (ties aside, which have probability zero for float inputs)."""
    if pre.device.type == "cpu" and pre.dtype in (torch.float32, torch.float64) and not pre.requires_grad:
        import numpy as np

        d = pre.shape[-1]
        part = np.argpartition(pre.detach().contiguous().numpy(), d - k, axis=-1)[..., d - k:]
        return torch.from_numpy(np.ascontiguousarray(part))
    return pre.topk(k, dim=-1).indices


def hook_width(model: Any, hook: str) -> Optional[int]:
    """The last-axis width of a hook point, from the model's config (None if unknown)."""
    cfg = model.cfg
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")):
        return cfg.d_mlp
    if hook.endswith(("hook_scale",)):
        return 1
    if hook.endswith(("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_pattern", "hook_attn_scores")):
        return None  # per-head shapes: SAEs on them flatten heads; not checked here
    return cfg.d_model


class TranscoderSet:
    """Transcoders of one model, indexable by layer (``tset[1]``), with the model facts they need."""

    def __init__(self, transcoders: Mapping[int, Transcoder], model_name: Optional[str] = None,
                 processing: Optional[Mapping[str, bool]] = None, source: str = "") -> None:
        if not transcoders:
            raise FeaturesUnavailable("a transcoder set needs at least one transcoder")
        self.by_layer = dict(sorted(transcoders.items()))
        self.model_name = model_name
        self.processing = dict(processing) if processing is not None else None
        self.source = source

    @property
    def layers(self) -> list[int]:
        return list(self.by_layer)

    def __getitem__(self, layer: int) -> Transcoder:
        try:
            return self.by_layer[layer]
        except KeyError:
            raise FeaturesUnavailable(f"no transcoder for layer {layer!r}; layers with one: {self.layers}") from None

    def __contains__(self, layer: object) -> bool:
        return layer in self.by_layer

    def __iter__(self) -> Iterator[Transcoder]:
        return iter(self.by_layer.values())

    def __len__(self) -> int:
        return len(self.by_layer)

    def check_fits(self, model: Any) -> None:
        """Hooks and widths exist in ``model``, and its weight processing is the one trained for."""
        if self.processing is not None:
            have = dict(getattr(model, "processing", {}) or {})
            differ = {k: (v, have.get(k)) for k, v in self.processing.items() if bool(have.get(k)) != bool(v)}
            if differ:
                detail = ", ".join(f"{k}: trained with {a}, model has {b}" for k, (a, b) in differ.items())
                raise FeaturesUnavailable(f"these transcoders were trained on a model with other weight processing ({detail})")
        for tc in self:
            tc.check_fits(model)

    def to(self, *args: Any, **kwargs: Any) -> "TranscoderSet":
        for tc in self:
            tc.to(*args, **kwargs)
        return self

    def fingerprint(self) -> str:
        """sha256 over every tensor and config, for cache keys."""
        import hashlib

        digest = hashlib.sha256()
        for layer, tc in self.by_layer.items():
            digest.update(json.dumps(tc.cfg.to_dict(), sort_keys=True).encode())
            for name, tensor in sorted(tc.state_dict().items()):
                digest.update(f"{layer}.{name}".encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


# ----------------------------------------------------------------------------- files

def save_transcoders(tset: TranscoderSet, directory: Union[str, Path], extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``config.json`` + ``transcoders.safetensors`` into ``directory`` (created)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"blocks.{layer}.{name}": t.detach().float().cpu().contiguous()
               for layer, tc in tset.by_layer.items() for name, t in tc.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    config = {"format": FORMAT, "version": FORMAT_VERSION, "model_name": tset.model_name,
              "processing": tset.processing, "transcoders": [tc.cfg.to_dict() for tc in tset], **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _read_dir(directory: Path) -> TranscoderSet:
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    require_files("transcoder", config_path, weights_path)
    config = read_json_object(config_path)
    if config.get("format") != FORMAT:
        raise FeaturesUnavailable(f"{config_path} is not a transcoder config (format tag {FORMAT!r} missing)")
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(weights_path))
    except Exception as exc:  # truncated or corrupt files raise several error types
        raise FeaturesUnavailable(f"cannot read {weights_path} (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    transcoders = {}
    for entry in config.get("transcoders", []):
        cfg = TranscoderConfig.from_dict(entry)
        transcoders[cfg.layer] = build_transcoder(cfg, {name.split(".", 2)[2]: t for name, t in tensors.items()
                                                         if name.startswith(f"blocks.{cfg.layer}.")}, str(weights_path))
    return TranscoderSet(transcoders, model_name=config.get("model_name"), processing=config.get("processing"),
                         source=str(directory))


def build_transcoder(cfg: TranscoderConfig, tensors: Mapping[str, torch.Tensor], source: str = "") -> Transcoder:
    """A Transcoder from named tensors, every shape checked (b_in, threshold optional)."""
    tc = Transcoder(cfg)
    expected = {name: tuple(t.shape) for name, t in tc.state_dict().items()}
    for name, shape in expected.items():
        if name not in tensors:
            if name in ("b_in", "threshold"):
                continue
            raise FeaturesUnavailable(f"{source}: layer {cfg.layer} lacks tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise FeaturesUnavailable(f"{source}: layer {cfg.layer} tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                      f"expected {shape} from its config (d_in={cfg.d_in}, d_sae={cfg.d_sae}, d_out={cfg.d_out})")
    with torch.no_grad():
        for name, param in tc.state_dict(keep_vars=True).items():
            if name in tensors:
                param.copy_(tensors[name].to(torch.float32))
    return tc


def load_transcoders(model_or_dir: Any) -> TranscoderSet:
    """The transcoders of a model, or of a directory in the project's format.

    With a model: the bundled model's own transcoders (``model.cfg.model_name == "default"``), checked
    against the model (hooks, widths, weight processing). Anything else raises FeaturesUnavailable.
    """
    if isinstance(model_or_dir, (str, Path)):
        directory = Path(model_or_dir).expanduser()
        if not directory.is_dir():
            raise FeaturesUnavailable(f"no transcoder directory at {str(model_or_dir)!r}")
        return _read_dir(directory)
    model = model_or_dir
    name = getattr(getattr(model, "cfg", None), "model_name", None)
    if name != "default":
        raise FeaturesUnavailable(f"no transcoders are bundled for model {name!r}; only the default model has them "
                                  "(load an SAE in SAELens format with lens_core.features.load_saelens)")
    if not DEFAULT_TRANSCODERS_DIR.is_dir():
        raise FeaturesUnavailable(f"the default model's transcoders are missing from {DEFAULT_TRANSCODERS_DIR}")
    tset = _read_dir(DEFAULT_TRANSCODERS_DIR)
    tset.check_fits(model)
    return tset.to(device=model.cfg.device, dtype=model.cfg.dtype)
