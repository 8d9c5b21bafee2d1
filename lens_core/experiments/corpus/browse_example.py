"""One example of a corpus browse: a window, a position, and the component's part in predicting
the actual next token there.

The panel: the logits at the position before and after the ablation (top tokens, the next
token's logit, probability and loss), the component's direct logit attribution for the next
token (``lens_core.experiments.views.dla``: the head's row, the layer's attn/mlp part, or the
neuron), the head's attention pattern from that position (``attention``), and the logit lens
on the residual entering the component's layer (``logit_lens``). Those three run on the
window's prefix up to the position, which is what the model sees there (attention is causal).
A transcoder feature's DLA is its activation times its decoder row, through the final norm with
its scale frozen (as ``dla`` does for every other component).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import final_norm_linear, logit_direction, str_tokens
from ..views.attention import AttentionRequest, attention_patterns
from .browse import ablated_logits, component_label, request_corpus, resolve_component
from ..views.dla import DLARequest, direct_logit_attribution
from ..views.logit_lens import LogitLensRequest, logit_lens


@dataclasses.dataclass(frozen=True)
class BrowseExampleRequest:
    component: tuple = ("head", 0, 0)
    method: str = "zero"
    corpus_text: Optional[str] = None
    corpus_tokens: Optional[tuple[int, ...]] = None
    window_len: int = 128
    seed: int = 0
    window: int = 0
    position: int = 1  # the position whose next-token prediction is examined (0 is BOS)
    top_k: int = 10
    transcoders: str = "bundled"  # features only (see BrowseRequest)


@dataclasses.dataclass
class BrowseExampleResult(ExperimentResult):
    kind = "browse_example"
    token_ids: torch.Tensor  # [pos] the window's real tokens
    before_top_ids: torch.Tensor  # [k]
    before_top_probs: torch.Tensor
    after_top_ids: torch.Tensor
    after_top_probs: torch.Tensor
    lens_top_ids: torch.Tensor  # [k] logit lens at the residual entering the component's layer
    lens_top_probs: torch.Tensor
    attention: torch.Tensor  # [position + 1]: the head's attention from the position (empty unless a head)
    str_tokens: list
    before_top_tokens: list
    after_top_tokens: list
    lens_top_tokens: list
    lens_layer: str
    window: int
    window_label: str
    position: int
    next_token_id: int
    next_token: str
    loss_before: float
    loss_after: float
    logit_before: float
    logit_after: float
    prob_before: float
    prob_after: float
    lens_next_prob: float
    dla: float  # the component's direct logit attribution to the next token
    dla_logit: float  # the next token's logit, which DLA decomposes
    component_label: str
    method: str


@torch.inference_mode()
def browse_example(model, request: BrowseExampleRequest, transcoders=None) -> BrowseExampleResult:
    target = resolve_component(model, request.component, transcoders)
    corpus = request_corpus(model, request)
    if not 0 <= request.window < corpus.n_windows:
        raise ValueError(f"window {request.window} is outside the corpus's {corpus.n_windows} windows")
    length = int(corpus.lengths[request.window])
    pos = int(request.position)
    if not 0 <= pos < length - 1:
        raise ValueError(f"position must be in [0, {length - 2}] (a position with a next token), got {pos}")
    ids = corpus.tokens[request.window, :length]
    next_id = int(ids[pos + 1])
    k = max(1, min(int(request.top_k), model.cfg.d_vocab_out))

    plain, ablated = ablated_logits(model, corpus, target, request.method, torch.tensor([request.window]), request.seed)
    before, after = plain[0, pos].float(), ablated[0, pos].float()
    p_before, p_after = before.softmax(-1), after.softmax(-1)
    lp_before, lp_after = before.log_softmax(-1), after.log_softmax(-1)
    tb, ta = p_before.topk(k), p_after.topk(k)

    prefix = tuple(int(t) for t in ids[: pos + 1])
    dla = direct_logit_attribution(model, DLARequest(tokens=prefix, answer=next_id, position=-1,
                                                     neuron_layer=target.layer))
    if target.kind == "head":
        part = float(dla.heads[target.layer, target.index])
    elif target.kind == "neuron":
        part = float(dla.neurons[target.index])
    elif target.kind == "feature":
        part = _feature_dla(model, target, prefix, next_id)
    else:
        part = float(dla.decomposed[dla.component_labels.index(f"L{target.layer} {target.kind}")])
    if target.kind == "head":
        pattern = attention_patterns(model, AttentionRequest(tokens=prefix)).patterns[target.layer, target.index, -1]
    else:
        pattern = torch.zeros(0)
    lens = logit_lens(model, LogitLensRequest(tokens=prefix, targets=(next_id,), top_k=k))
    return BrowseExampleResult(
        token_ids=ids.clone(),
        before_top_ids=tb.indices.cpu(), before_top_probs=tb.values.cpu(),
        after_top_ids=ta.indices.cpu(), after_top_probs=ta.values.cpu(),
        lens_top_ids=lens.top_token_ids[target.layer, -1], lens_top_probs=lens.top_probs[target.layer, -1],
        attention=pattern.float().cpu(),
        str_tokens=str_tokens(model, ids.tolist()),
        before_top_tokens=str_tokens(model, tb.indices.tolist()),
        after_top_tokens=str_tokens(model, ta.indices.tolist()),
        lens_top_tokens=list(lens.top_tokens[target.layer][-1]),
        lens_layer=lens.layer_labels[target.layer],
        window=int(request.window), window_label=corpus.window_label(request.window), position=pos,
        next_token_id=next_id, next_token=str_tokens(model, [next_id])[0],
        loss_before=float(-lp_before[next_id]), loss_after=float(-lp_after[next_id]),
        logit_before=float(before[next_id]), logit_after=float(after[next_id]),
        prob_before=float(p_before[next_id]), prob_after=float(p_after[next_id]),
        lens_next_prob=float(lens.target_probs[target.layer, -1, 0]),
        dla=part, dla_logit=float(dla.logit_diff),
        component_label=component_label(request.component), method=request.method,
    )


def _feature_dla(model, target, prefix: tuple, next_id: int) -> float:
    tokens = torch.tensor([prefix], device=model.W_E.device)
    _, cache = model.run_with_cache(tokens, names_filter=[target.read_hook, "ln_final.hook_scale"])
    act = target.select(target.full(cache[target.read_hook]))[0, -1].float()
    direction, _ = logit_direction(model, next_id, None)
    row = final_norm_linear(model, target.transcoder.W_dec[target.index].float(), cache["ln_final.hook_scale"][0, -1])
    return float(act * (row @ direction))
