"""Tiny random-weight models for the experiment tests, built in-process (no downloads)."""

from __future__ import annotations

import functools

import torch
from hf_tiny import VOCAB, tiny_tokenizer
from hf_tiny import gpt2 as hf_gpt2
from hf_tiny import llama as hf_llama
from hf_tiny import neox as hf_neox
from graph_support import random_transcoders

from lens_core import HookedTransformer

HF = {"gpt2": hf_gpt2, "neox": hf_neox, "llama": hf_llama}  # the shared tiny models (tests/support)


@functools.lru_cache(maxsize=None)
def tiny(family: str = "gpt2", fold: bool = True, seed: int = 0) -> HookedTransformer:
    """A HookedTransformer on a tiny random model; ``fold=False`` keeps the norm weights unfolded."""
    hf = HF[family](seed)
    options = dict(fold_ln=fold, center_writing_weights=fold, center_unembed=fold, fold_value_biases=fold)
    return HookedTransformer.from_hf_model(hf, tokenizer=None, **options)


def random_tokens(n_pos: int, seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, n_pos), generator=gen)


@functools.lru_cache(maxsize=None)
def tiny_with_tokenizer(seed: int = 0) -> HookedTransformer:
    return HookedTransformer.from_hf_model(hf_gpt2(seed), tokenizer=tiny_tokenizer())


def tiny_graph_case(family: str, fold: bool, n_pos: int, seed: int):
    """(model, random per-layer transcoders, random tokens): the usual start of a graph test."""
    model = tiny(family, fold)
    return model, random_transcoders(model), random_tokens(n_pos, seed=seed)
