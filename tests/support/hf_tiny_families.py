"""Tiny random-weight Gemma 2, Gemma 3 (text), Qwen3 and OLMo 2 models, built in-process (no downloads).

Sized so that every variant really acts on a 12-token prompt: a sliding window of 4 keys, soft-caps small
enough that tanh bends the scores and logits, ``query_pre_attn_scalar`` unlike ``head_dim``, distinct
rotary bases for local and global layers.
"""

from __future__ import annotations

import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, Olmo2Config,
                          Olmo2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from hf_tiny import VOCAB, _randomize

COMMON = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
              intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
              pad_token_id=0)


def _build(config_cls, model_cls, seed: int, **cfg):
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return _randomize(model_cls(config), seed)


def gemma2(seed: int = 0, **overrides) -> Gemma2ForCausalLM:
    cfg = dict(COMMON, query_pre_attn_scalar=12, sliding_window=4, attn_logit_softcapping=5.0,
               final_logit_softcapping=3.0, layer_types=["sliding_attention", "full_attention"],
               hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
    cfg.update(overrides)
    return _build(Gemma2Config, Gemma2ForCausalLM, seed, **cfg)


def gemma3(seed: int = 0, **overrides) -> Gemma3ForCausalLM:
    cfg = dict(COMMON, query_pre_attn_scalar=12, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
               rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}},
               hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
    cfg.update(overrides)
    return _build(Gemma3TextConfig, Gemma3ForCausalLM, seed, **cfg)


def qwen3(seed: int = 0, **overrides) -> Qwen3ForCausalLM:
    cfg = dict(COMMON, tie_word_embeddings=False)
    cfg.update(overrides)
    return _build(Qwen3Config, Qwen3ForCausalLM, seed, **cfg)


def olmo2(seed: int = 0, **overrides) -> Olmo2ForCausalLM:
    cfg = dict(COMMON, tie_word_embeddings=False)
    cfg.update(overrides)
    return _build(Olmo2Config, Olmo2ForCausalLM, seed, **cfg)


FAMILIES = {"gemma2": gemma2, "gemma3": gemma3, "qwen3": qwen3, "olmo2": olmo2}
