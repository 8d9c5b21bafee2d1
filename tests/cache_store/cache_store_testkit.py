"""Stand-ins shared by the cache_store tests: a tiny model object and a result class."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Optional

import torch

from lens_core.results import ExperimentResult


class TinyModel:
    """Just what model_fingerprint reads: cfg.model_name, cfg.dtype, processing, weights."""

    def __init__(self, name: str = "tiny", dtype: torch.dtype = torch.float32, processing: dict | None = None, seed: int = 0):
        self.cfg = types.SimpleNamespace(model_name=name, dtype=dtype)
        if processing is not None:
            self.processing = processing
        generator = torch.Generator().manual_seed(seed)
        self.weights = {"embed.W_E": torch.randn(5, 4, generator=generator), "unembed.b_U": torch.zeros(5)}
        self.state_dict_calls = 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.state_dict_calls += 1
        return dict(self.weights)


class HashedModel(TinyModel):
    """A model that reports its own weights hash (as the core HookedTransformer does)."""

    def __init__(self, digest: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.digest = digest

    def weights_hash(self) -> str:
        return self.digest


@dataclasses.dataclass
class MixedResult(ExperimentResult):
    """Tensors of several dtypes, nested labels and None."""

    kind = "cache_store_test_mixed"
    logits: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    half: torch.Tensor
    labels: dict
    note: Optional[str]
    scalar: torch.Tensor


def mixed_result(seed: int = 0) -> MixedResult:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, 4, 5, generator=g)
    return MixedResult(
        logits=base.transpose(0, 2),  # non-contiguous
        ids=torch.randint(0, 50257, (2, 7), generator=g),
        mask=torch.rand(4, generator=g) > 0.5,
        half=torch.randn(6, generator=g).to(torch.bfloat16),
        labels={"tokens": ["<|endoftext|>", " Paris", "é"], "layers": [[0, 1], [2]], "unit": None, "scale": 0.1},
        note=None,
        scalar=torch.tensor(2.5, dtype=torch.float64),
    )


def assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    """Exact equality: same types, tensors with the same dtype, shape and values."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{path}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert torch.equal(actual, expected), f"{path}: values differ"
    elif dataclasses.is_dataclass(expected):
        for field in dataclasses.fields(expected):
            assert_same(getattr(actual, field.name), getattr(expected, field.name), f"{path}.{field.name}")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


WORDS = ["<|endoftext|>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "Paris", "is", "in", "France", "[UNK]"]


def tiny_hf_gpt2(seed: int = 0, n_layer: int = 2):
    """A random-weight transformers GPT-2 and a word-level tokenizer built in-process (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    word_model = models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]")
    backend = Tokenizer(word_model)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="[UNK]"
    )
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=16, n_embd=16, n_layer=n_layer, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval(), tokenizer
