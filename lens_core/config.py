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

NORMALIZATION_TYPES = ("LN", "LNPre", "RMS", "RMSPre", None)  # None: no norms (TransformerLens's identity)
POSITIONAL_TYPES = ("standard", "rotary", "shortformer")  # shortformer: positions only in queries and keys
INIT_MODES = ("gpt2", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
ACT_FNS = ("gelu", "gelu_new", "silu", "relu")
SUBLAYER_NORMS = ("pre", "pre_post", "post")


@dataclasses.dataclass
class HookedTransformerConfig:
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: Optional[int] = None  # None: 4 * d_model (none at all when attn_only), as in TransformerLens
    d_vocab: int = -1  # must be set (TransformerLens would read it off the tokenizer)
    n_ctx: int = -1  # must be set
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
    attn_only: bool = False  # no MLPs (and no ln2, mlp_in, mlp_out, resid_mid hook points)
    seed: Optional[int] = None  # seeds init_weights
    init_weights: bool = True  # HookedTransformer(cfg) initialises (loading turns it off)
    init_mode: str = "gpt2"
    initializer_range: float = -1.0  # -1: 0.8 / sqrt(d_model) for "gpt2", else a gain of 1 (TransformerLens's defaults)
    attention_dir: str = "causal"  # TransformerLens's field; only "causal" is supported
    # Variants of the newer families (Gemma 2/3, Qwen3, OLMo 2); see lens_core/families/.
    sublayer_norms: str = "pre"  # "pre" | "pre_post" (ln1_post, ln2_post too: Gemma) | "post" (only those: OLMo 2)
    qk_norm: Optional[str] = None  # None | "head" (RMSNorm over d_head: Qwen3, Gemma 3) | "all" (over all heads: OLMo 2)
    attn_scores_soft_cap: float = -1.0  # > 0: scores -> cap * tanh(scores / cap) (Gemma 2); TransformerLens's name
    output_logits_soft_cap: float = -1.0  # > 0: the same on the logits
    attn_types: Optional[list] = None  # per layer "global" | "local" (sliding window of window_size keys)
    window_size: Optional[int] = None
    rotary_base_local: Optional[float] = None  # rotary base of the "local" layers (Gemma 3); no scaling there
    embed_scale: float = 1.0  # token embeddings are multiplied by this (Gemma: sqrt(d_model))

    def __post_init__(self) -> None:
        if self.d_vocab <= 0 or self.n_ctx <= 0:
            raise ValueError(f"d_vocab and n_ctx must be positive, got d_vocab={self.d_vocab}, n_ctx={self.n_ctx}")
        if self.d_mlp is None and not self.attn_only:
            self.d_mlp = 4 * self.d_model
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
        if self.init_mode not in INIT_MODES:
            raise NotImplementedError(f"init_mode {self.init_mode!r}: supported are {INIT_MODES} (TransformerLens 4's)")
        if self.attention_dir != "causal":
            raise NotImplementedError("only attention_dir='causal' is supported (bidirectional models are not)")
        if self.sublayer_norms not in SUBLAYER_NORMS:
            raise ValueError(f"sublayer_norms must be one of {SUBLAYER_NORMS}, got {self.sublayer_norms!r}")
        if self.qk_norm not in (None, "head", "all"):
            raise ValueError(f"qk_norm must be None, 'head' or 'all', got {self.qk_norm!r}")
        if self.attn_types is not None:
            if len(self.attn_types) != self.n_layers or set(self.attn_types) - {"global", "local"}:
                raise ValueError("attn_types needs one 'global' or 'local' per layer")
            if "local" in self.attn_types and not self.window_size:
                raise ValueError("local attention layers need a window_size")
        if self.n_heads % self.n_key_value_heads:
            raise ValueError("n_heads must be a multiple of n_key_value_heads")

    @property
    def use_normalization_before_and_after(self) -> bool:  # TransformerLens's name for Gemma's layout
        return self.sublayer_norms == "pre_post"

    @property
    def use_qk_norm(self) -> bool:
        return self.qk_norm is not None

    @property
    def use_local_attn(self) -> bool:
        return bool(self.attn_types) and "local" in self.attn_types

    def is_local(self, layer: int) -> bool:
        return bool(self.attn_types) and self.attn_types[layer] == "local"

    @property
    def unfolded_norm_type(self) -> str:
        """The kind of the norms that keep their weights (post-sublayer and q/k norms): never folded."""
        return {"LNPre": "LN", "RMSPre": "RMS"}.get(self.normalization_type, self.normalization_type)

    @property
    def n_kv_groups(self) -> int:
        return self.n_heads // self.n_key_value_heads

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out
