"""Small helpers with TransformerLens's names: activation names, slices, losses, a quick prompt check."""

from __future__ import annotations

import re
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .tensor_utils import (  # noqa: F401  (TransformerLens's utils names)
    composition_scores, get_cumsum_along_dim, get_matrix_corner, get_nested_attr, get_offset_position_ids,
    is_lower_triangular, is_square, repeat_along_head_dimension, set_nested_attr,
)
from .tokenize_utils import tokenize_and_concatenate  # noqa: F401

_ATTN = {"q", "k", "v", "z", "rot_q", "rot_k", "attn_scores", "pattern", "result"}
_MLP = {"pre", "post", "pre_linear", "mid"}
_BLOCK = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_in", "mlp_in", "q_input", "k_input", "v_input"}
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v", "mlp_pre": "pre",
            "mlp_mid": "mid", "mlp_post": "post"}
_LAYER_TYPES = {"a": "attn", "attention": "attn", "attn": "attn", "m": "mlp", "mlp": "mlp", "ln1": "ln1", "ln2": "ln2",
                "b": None, "block": None, "blocks": None, "": None}
_PACKED = re.compile(r"([a-z_]+?)(\d+)([a-z]?.*)$")  # "k6", "scale4ln1", "pre5"


def get_act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens's shorthand: ``get_act_name("pattern", 3) == "blocks.3.attn.hook_pattern"``.

    Also its packed forms (``"k6"``, ``"scale4ln1"``) and layer types (``"a"``, ``"m"``, ``"attn"``, ``"ln1"``).
    ``layer`` must be non-negative here; ``ActivationCache`` resolves negative layers first.
    Norm hooks: ``("scale", 2, "ln1")`` -> ``blocks.2.ln1.hook_scale``; ``("scale",)`` -> ``ln_final.hook_scale``.
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name  # already a full name
    packed = _PACKED.match(name) if layer is None else None
    if packed is not None:
        name, layer, layer_type = packed.group(1), int(packed.group(2)), packed.group(3) or None
    name = _ALIASES.get(name, name)
    if layer_type is not None and layer_type not in _LAYER_TYPES:
        raise ValueError(f"unknown layer_type {layer_type!r}")
    layer_type = _LAYER_TYPES.get(layer_type) if layer_type is not None else None
    if name in ("embed", "pos_embed", "tokens"):
        return f"hook_{name}"
    if name in ("scale", "normalized"):
        if layer is None:
            return f"ln_final.hook_{name}"
        if layer_type not in ("ln1", "ln2"):
            raise ValueError(f"{name!r} needs layer_type 'ln1' or 'ln2' with a layer")
        return f"blocks.{layer}.{layer_type}.hook_{name}"
    if layer is None:
        raise ValueError(f"activation {name!r} needs a layer")
    if name in _ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    if name in _BLOCK:
        return f"blocks.{layer}.hook_{name}"
    raise ValueError(f"unknown activation name {name!r}")


class Slice:
    """TransformerLens's slice: an int indexes (drops the axis), a tuple is ``slice(*t)``, a list/tensor
    picks indices, None keeps everything. ``Slice(3).apply(x, dim=1) == x[:, 3]``."""

    def __init__(self, input_slice: Any = None) -> None:
        if isinstance(input_slice, Slice):
            input_slice = input_slice.slice if input_slice.mode != "identity" else None
        if isinstance(input_slice, (np.integer,)) or (isinstance(input_slice, torch.Tensor) and input_slice.dim() == 0):
            input_slice = int(input_slice)
        if isinstance(input_slice, bool):
            raise ValueError(f"invalid slice {input_slice!r}")
        if isinstance(input_slice, tuple):
            self.slice, self.mode = slice(*input_slice), "slice"
        elif isinstance(input_slice, int):
            self.slice, self.mode = input_slice, "int"
        elif isinstance(input_slice, slice):
            self.slice, self.mode = input_slice, "slice"
        elif isinstance(input_slice, (list, torch.Tensor, np.ndarray)):
            self.slice, self.mode = to_numpy(input_slice).astype(np.int64), "array"
        elif input_slice is None:
            self.slice, self.mode = slice(None), "identity"
        else:
            raise ValueError(f"invalid slice {input_slice!r}")

    def apply(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if self.mode == "identity":
            return tensor
        index: list[Any] = [slice(None)] * tensor.dim()
        index[dim] = torch.as_tensor(self.slice, device=tensor.device) if self.mode == "array" else self.slice
        return tensor[tuple(index)]

    def indices(self, max_ctx: Optional[int] = None) -> np.ndarray:
        if self.mode == "int":
            return np.array([self.slice], dtype=np.int64)
        if max_ctx is None:
            raise ValueError("max_ctx must be given unless the slice is an integer")
        return np.arange(max_ctx, dtype=np.int64)[self.slice]

    @classmethod
    def unwrap(cls, slice_input: Any) -> "Slice":
        """As a Slice, but an integer keeps its axis (as TransformerLens's run_with_cache(pos_slice=) does)."""
        if isinstance(slice_input, Slice):
            return slice_input
        if isinstance(slice_input, (int, np.integer)) and not isinstance(slice_input, bool):
            slice_input = [int(slice_input)]
        return cls(slice_input)

    def __repr__(self) -> str:
        return f"Slice({self.slice!r}, mode={self.mode!r})"


def to_numpy(tensor: Any) -> np.ndarray:
    """A tensor (detached, on the CPU; bfloat16 as float32), list, tuple or scalar as a numpy array."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu()
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    if isinstance(tensor, (list, tuple, int, float, bool, str)):
        return np.array(tensor)
    raise ValueError(f"to_numpy cannot convert {type(tensor).__name__}")


def get_corner(tensor: Any, n: int = 3) -> Any:
    """The top-left ``n x n x ...`` corner. A FactoredMatrix gives its corner as a FactoredMatrix (TransformerLens's
    behaviour; ``fm.get_corner(n)`` or ``get_matrix_corner`` give the dense corner)."""
    return tensor[tuple(slice(n) for _ in range(tensor.ndim))]


def remove_batch_dim(tensor: torch.Tensor) -> torch.Tensor:
    """Drop a leading axis of size 1; anything else is returned unchanged."""
    return tensor.squeeze(0) if tensor.ndim > 0 and tensor.shape[0] == 1 else tensor


def transpose(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.transpose(-1, -2)


def get_attention_mask(tokenizer: Any, tokens: torch.Tensor, prepend_bos: bool, padding_side: Optional[str] = None) -> torch.Tensor:
    """1 for real tokens, 0 for padding: only the trailing pads (right padding) or the leading pads (left
    padding) count as padding; with left padding a BOS that shares the pad id is kept."""
    mask = torch.ones_like(tokens)
    if tokenizer is None:
        return mask
    padding_side = padding_side or tokenizer.padding_side
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id  # TL pads with EOS
    real = tokens.ne(pad_id).long()
    if padding_side == "right":
        mask[real.flip(-1).cumsum(-1).flip(-1) == 0] = 0
    else:
        leading = real.cumsum(-1) == 0
        mask[leading] = 0
        if prepend_bos and tokenizer.bos_token_id == pad_id:
            mask[torch.arange(mask.shape[0]), leading.sum(-1) - 1] = 1
    return mask


def lm_cross_entropy_loss(logits: torch.Tensor, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                          per_token: bool = False) -> torch.Tensor:
    """Next-token loss, TransformerLens's definition: [batch, pos-1] per token (0 where masked), or the mean
    over positions whose token and next token are both unmasked."""
    log_probs = F.log_softmax(logits, dim=-1)
    predicted = log_probs[..., :-1, :].gather(-1, tokens[..., 1:, None].to(logits.device))[..., 0]
    if attention_mask is not None:
        if attention_mask.shape != tokens.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match tokens {tuple(tokens.shape)}")
        keep = (attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()).to(predicted.device)
        predicted = predicted.masked_fill(~keep, 0.0)
        n_tokens = keep.sum().item()
    else:
        n_tokens = predicted.numel()
    return -predicted if per_token else -predicted.sum() / n_tokens


def lm_accuracy(logits: torch.Tensor, tokens: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    correct = logits.argmax(-1)[:, :-1] == tokens[:, 1:].to(logits.device)
    return correct if per_token else correct.sum() / correct.numel()


def test_prompt(prompt: str, answer: Union[str, list[str]], model: Any, prepend_space_to_answer: bool = True,
                print_details: bool = True, prepend_bos: Optional[bool] = None, top_k: int = 10) -> None:
    """Print the answer's rank, logit and probability after ``prompt`` and the top-k tokens (TransformerLens's
    report, same lines without the bold markup). Several answers: next-token only, compared side by side."""
    answers = [answer] if isinstance(answer, str) else list(answer)
    multiple = len(answers) > 1
    if prepend_space_to_answer:
        answers = [a if a.startswith(" ") else " " + a for a in answers]
    prompt_tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    if multiple:
        answer_tokens = torch.cat([model.to_tokens(a, prepend_bos=False)[:, :1] for a in answers])
    else:
        answer_tokens = model.to_tokens(answers, prepend_bos=False)
    tokens = torch.cat((prompt_tokens.repeat(answer_tokens.shape[0], 1), answer_tokens.to(prompt_tokens.device)), dim=1)
    prompt_str = model.to_str_tokens(prompt, prepend_bos=prepend_bos)
    answer_strs = [model.to_str_tokens(a, prepend_bos=False) for a in answers]
    n_prompt, n_answer = len(prompt_str), 1 if multiple else len(answer_strs[0])
    if print_details:
        print("Tokenized prompt:", prompt_str)
        print("Tokenized answers:" if multiple else "Tokenized answer:", answer_strs if multiple else answer_strs[0])
    with torch.no_grad():
        logits = model(tokens)
    probs = logits.softmax(dim=-1)
    ranks = []
    for index in range(n_prompt, n_prompt + n_answer):
        targets = tokens[:, index]
        target_strs = [a[index - n_prompt] for a in answer_strs]
        token_probs = probs[:, index - 1]
        sorted_probs, sorted_ids = token_probs.sort(descending=True)
        target_ranks = sorted_ids.argsort(-1)[range(len(answers)), targets.cpu()].tolist()
        ranks.append(list(zip(target_strs, target_ranks)))
        if print_details:
            print(f"Performance on answer token{'s' if multiple else ''}:")
            for i in range(len(answers)):
                print(f"Rank: {target_ranks[i]: <8} Logit: {logits[i, index - 1, targets[i]].item():5.2f} "
                      f"Prob: {token_probs[i, targets[i]].item():6.2%} Token: |{target_strs[i]}|")
            for i in range(top_k):
                print(f"Top {i}th token. Logit: {logits[0, index - 1, sorted_ids[0, i]].item():5.2f} "
                      f"Prob: {sorted_probs[0, i].item():6.2%} Token: |{model.to_string(sorted_ids[0, i])}|")
    print("Ranks of the answer tokens:", [r[0] for r in ranks] if not multiple else ranks)


test_prompt.__test__ = False  # a library function, not a pytest test
