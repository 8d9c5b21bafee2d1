"""One config describing every supported architecture.

Field names follow TransformerLens's ``HookedTransformerConfig`` so notebook
knowledge carries over. Architectural variants are data here (norm kind,
positional kind, gated MLP, parallel attention+MLP, kv heads), never
``if architecture == ...`` branches in the shared components.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

NORMALIZATION_TYPES = ("LN", "LNPre", "RMS", "RMSPre")
POSITIONAL_TYPES = ("standard", "rotary")
ACT_FNS = ("gelu", "gelu_new", "silu", "relu")


@dataclasses.dataclass
class HookedTransformerConfig:
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str = "gelu_new"
    n_key_value_heads: Optional[int] = None  # None: as many as n_heads (no GQA)
    normalization_type: str = "LN"
    positional_embedding_type: str = "standard"
    rotary_dim: Optional[int] = None  # dims of each head that rotate (partial rotary in Pythia)
    rotary_base: float = 10000.0
    rope_scaling: Optional[dict] = None  # {"rope_type": "linear"|"llama3", ...} as in HF configs
    parallel_attn_mlp: bool = False  # GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x))
    gated_mlp: bool = False  # Llama: W_out(act(x W_gate) * (x W_in))
    eps: float = 1e-5
    attn_scale: Optional[float] = None  # None: sqrt(d_head)
    model_name: str = "custom"
    original_architecture: str = "custom"
    tokenizer_name: Optional[str] = None
    default_prepend_bos: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    d_vocab_out: Optional[int] = None
    # Fields TransformerLens notebooks read or set.
    use_attn_result: bool = False  # run_with_cache(names_filter=None) also keeps hook_result
    attn_only: bool = False  # no MLPs (not supported by the components: an error says so)
    seed: Optional[int] = None  # seeds init_weights
    init_weights: bool = True  # HookedTransformer(cfg) initialises (loading turns it off)
    init_mode: str = "gpt2"
    initializer_range: float = -1.0  # -1: 0.8 / sqrt(d_model), TransformerLens's default

    def __post_init__(self) -> None:
        if self.n_key_value_heads is None:
            self.n_key_value_heads = self.n_heads
        if self.d_vocab_out is None:
            self.d_vocab_out = self.d_vocab
        if self.attn_scale is None:
            self.attn_scale = self.d_head**0.5
        if self.positional_embedding_type == "rotary" and self.rotary_dim is None:
            self.rotary_dim = self.d_head
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ValueError(f"normalization_type must be one of {NORMALIZATION_TYPES}, got {self.normalization_type!r}")
        if self.positional_embedding_type not in POSITIONAL_TYPES:
            raise ValueError(f"positional_embedding_type must be one of {POSITIONAL_TYPES}")
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"act_fn must be one of {ACT_FNS}, got {self.act_fn!r}")
        if self.attn_only:
            raise NotImplementedError("attention-only models (attn_only=True) are not supported by lens_core")
        if self.init_mode != "gpt2":
            raise NotImplementedError(f"init_mode {self.init_mode!r}: only TransformerLens's 'gpt2' initialisation is supported")
        if self.n_heads % self.n_key_value_heads:
            raise ValueError("n_heads must be a multiple of n_key_value_heads")

    @property
    def n_kv_groups(self) -> int:
        return self.n_heads // self.n_key_value_heads

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out
