"""Browse: a component's ablation over a corpus, checked against plain one-window-at-a-time loops,
the single-prompt experiments, and (on the bundled model) the induction head's known job."""

import math

import pytest
import torch

from lens_core import HookedTransformer
from lens_core.corpus import load_default_corpus
from lens_core.experiments.interventions.ablation import AblationRequest, ablation
from lens_core.experiments.views.attention import AttentionRequest, attention_patterns
from lens_core.experiments.corpus.browse import (BrowseRequest, browse, chunk_requests, clear_memo, combine, parse_component,
                                          request_corpus, resample_sources, resolve_component)
from lens_core.experiments.corpus.browse_example import BrowseExampleRequest, browse_example
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors
from lens_core.experiments.views.dla import DLARequest, direct_logit_attribution
from lens_core.experiments.views.logit_lens import LogitLensRequest, logit_lens
from lens_core.experiments.views.predictions import PredictionsRequest, predictions

WINDOW = 32


@pytest.fixture(scope="module")
def model():
    return HookedTransformer.from_pretrained("default")


@pytest.fixture(scope="module")
def stream():
    # 9 full windows of 31 tokens and a short last one (13 tokens), from the held-out code.
    return tuple(load_default_corpus().stream[: 31 * 9 + 13].tolist())


def reference_loss(model, tokens, hook, edit):
    """Next-token loss of one window [pos - 1] with ``edit(act)`` applied at ``hook`` (plain loop, no batching)."""
    def fn(act, hook):
        act = act.clone()
        edit(act)
        return act

    logits = model.run_with_hooks(tokens[None], fwd_hooks=[(hook, fn)] if edit else [])
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[1:], reduction="none")


def plain_mean(model, corpus, hook):
    """Per-position mean of ``hook`` over the corpus's real positions, one window at a time."""
    total, count = 0, torch.zeros(corpus.window_len)
    for w in range(corpus.n_windows):
        n = int(corpus.lengths[w])
        _, cache = model.run_with_cache(corpus.tokens[w, :n][None], names_filter=hook)
        act = cache[hook][0]
        padded = torch.zeros(corpus.window_len, *act.shape[1:])
        padded[:n] = act
        total = total + padded
        count[:n] += 1
    return total / count.view(-1, *([1] * (total.dim() - 1)))


@pytest.mark.parametrize("component, method", [(("head", 1, 3), "zero"), (("head", 1, 3), "mean"),
                                               (("head", 2, 1), "resample"), (("mlp", 0), "mean"),
                                               (("neuron", 1, 7), "zero"), (("attn", 2), "resample")])
def test_ranked_losses_match_a_plain_hook_loop(model, stream, component, method):
    clear_memo()
    request = BrowseRequest(component=component, method=method, corpus_tokens=stream, window_len=WINDOW, top_k=6, seed=3)
    result = browse(model, request)
    corpus = request_corpus(model, request)
    target = resolve_component(model, component)
    mean = plain_mean(model, corpus, target.hook) if method == "mean" else None
    sources = resample_sources(corpus, 3) if method == "resample" else None
    checked = torch.cat([result.rise[:3], result.fall[:3], torch.tensor([[corpus.n_windows - 1, 5]])])
    for w, p in checked.tolist():
        n = int(corpus.lengths[w])
        tokens = corpus.tokens[w, :n]
        if method == "zero":
            value = torch.zeros_like(target.select(mean if mean is not None else model.run_with_cache(
                tokens[None], names_filter=target.hook)[1][target.hook]))
        elif method == "mean":
            value = target.select(mean[None, :n])
        else:
            src = corpus.tokens[int(sources[w])][None]
            value = target.select(model.run_with_cache(src, names_filter=target.hook)[1][target.hook])[:, :n]

        where = {"head": (slice(None), slice(None), target.index), "neuron": (..., target.index)}

        def edit(act, value=value):
            act[where.get(target.kind, ...)] = value

        plain = reference_loss(model, tokens, target.hook, None)
        ablated = reference_loss(model, tokens, target.hook, edit)
        assert result.loss[w, p] == pytest.approx(float(plain[p]), abs=1e-4)
        assert result.ablated_loss[w, p] == pytest.approx(float(ablated[p]), abs=1e-4)
    # Padding of the short last window is never scored.
    last = int(corpus.lengths[-1]) - 1
    assert torch.isnan(result.loss_change[-1, last:]).all() and torch.isfinite(result.loss_change[-1, :last]).all()


def test_ranking_order_and_chunks(model, stream):
    clear_memo()
    request = BrowseRequest(component=("head", 1, 3), method="zero", corpus_tokens=stream, window_len=WINDOW, top_k=20)
    result = browse(model, request)
    change = result.loss_change
    rises = change[result.rise[:, 0], result.rise[:, 1]]
    falls = change[result.fall[:, 0], result.fall[:, 1]]
    assert (rises[:-1] >= rises[1:]).all() and (falls[:-1] <= falls[1:]).all()
    finite = change[torch.isfinite(change)]
    assert float(rises[-1]) <= float(rises[0]) == pytest.approx(float(finite.max()))
    assert int((finite > rises[-1]).sum()) < 20 and int((finite < falls[-1]).sum()) < 20
    assert result.stats["n_tokens"] == len(stream)
    assert result.stats["mean_change"] == pytest.approx(float(finite.double().mean()), rel=1e-6)
    assert result.stats["share_rise_above"] == pytest.approx(float((finite > 0.1).double().mean()))
    # Slices of the corpus, run separately (the plain pass memo warm or cold), join to the same result.
    corpus = request_corpus(model, request)
    parts = []
    for i, part in enumerate(chunk_requests(request, corpus.n_windows, chunk=4)):
        if i == 1:
            clear_memo()
        parts.append(browse(model, part))
    joined = combine(request, parts, corpus)
    assert torch.allclose(joined.loss_change, change, atol=1e-5, equal_nan=True)
    assert torch.equal(joined.rise, result.rise) and joined.stats["n_tokens"] == result.stats["n_tokens"]


def test_example_panel_matches_the_single_prompt_experiments(model, stream):
    clear_memo()
    w, p = 4, 20
    base = dict(component=("head", 1, 3), method="zero", corpus_tokens=stream, window_len=WINDOW)
    panel = browse_example(model, BrowseExampleRequest(**base, window=w, position=p, top_k=5))
    window = tuple(panel.token_ids.tolist())
    prefix = window[: p + 1]
    assert panel.next_token_id == window[p + 1]
    ab = ablation(model, AblationRequest(tokens=window, components=(("head", 1, 3),), method="zero"))
    assert panel.loss_before == pytest.approx(float(ab.loss_per_token[p]), abs=1e-4)
    assert panel.loss_after == pytest.approx(float(ab.ablated_loss_per_token[p]), abs=1e-4)
    pred = predictions(model, PredictionsRequest(tokens=window, top_k=5))
    assert panel.before_top_ids.tolist() == pred.top_token_ids[p].tolist()
    assert torch.allclose(panel.before_top_probs, pred.top_probs[p], atol=1e-5)
    dla = direct_logit_attribution(model, DLARequest(tokens=prefix, answer=panel.next_token_id))
    assert panel.dla == pytest.approx(float(dla.heads[1, 3]), abs=1e-5)
    pattern = attention_patterns(model, AttentionRequest(tokens=window)).patterns[1, 3, p, : p + 1]
    assert torch.allclose(panel.attention, pattern, atol=1e-5)
    lens = logit_lens(model, LogitLensRequest(tokens=window, targets=(panel.next_token_id,), top_k=5))
    assert panel.lens_layer == "L1"
    assert panel.lens_next_prob == pytest.approx(float(lens.target_probs[1, p, 0]), abs=1e-5)
    assert panel.lens_top_ids.tolist() == lens.top_token_ids[1, p].tolist()
    # The browse over the corpus gives the same numbers at that token (mean ablation this time).
    base["method"] = "mean"
    result = browse(model, BrowseRequest(**base))
    panel = browse_example(model, BrowseExampleRequest(**base, window=w, position=p))
    assert panel.loss_after == pytest.approx(float(result.ablated_loss[w, p]), abs=1e-4)


def test_components_and_errors(model, stream):
    assert parse_component("L1H3") == ("head", 1, 3) and parse_component("l2 mlp") == ("mlp", 2)
    assert parse_component("L0N511") == ("neuron", 0, 511) and parse_component("L1 attn") == ("attn", 1)
    with pytest.raises(ValueError, match="cannot read component"):
        parse_component("head 3")
    with pytest.raises(ValueError, match="head index"):
        browse(model, BrowseRequest(component=("head", 1, 9), corpus_tokens=stream, window_len=WINDOW))
    with pytest.raises(ValueError, match="two full-length windows"):
        browse(model, BrowseRequest(component=("head", 1, 1), method="resample", corpus_tokens=stream[:40], window_len=WINDOW))
    with pytest.raises(ValueError, match="outside the corpus"):
        browse(model, BrowseRequest(component=("head", 1, 1), corpus_tokens=stream, window_len=WINDOW, window_start=99))


def test_default_corpus_refuses_another_tokenizer():
    from exp_tiny import tiny_with_tokenizer

    with pytest.raises(ValueError, match="Upload a text file"):
        browse(tiny_with_tokenizer(), BrowseRequest(component=("head", 0, 0), window_len=16))


def repeat_positions(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Bool [window, pos - 1]: position p predicts a token completing a trigram (t[p-1], t[p], t[p+1])
    that already occurred earlier in the window: the second occurrence of a repeated span."""
    out = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
    for w in range(tokens.shape[0]):
        t = tokens[w, : int(lengths[w])].tolist()
        seen = set()
        for p in range(1, len(t) - 1):
            trigram = (t[p - 1], t[p], t[p + 1])
            out[w, p] = trigram in seen
            seen.add(trigram)
    return out


def test_induction_head_matters_most_on_repeated_spans(model):
    """Measure: among the k=100 tokens whose loss rises most when the strongest induction head is
    zero-ablated over the first 200 held-out windows, the share that are second occurrences of a
    repeated span (see repeat_positions), against that share over all tokens (the base rate)."""
    scores = head_detectors(model, DetectorRequest(seq_len=50, batch=4, seed=0)).induction
    layer, head = divmod(int(scores.argmax()), model.cfg.n_heads)
    result = browse(model, BrowseRequest(component=("head", layer, head), method="zero", window_stop=200, top_k=100))
    corpus = load_default_corpus()
    repeats = repeat_positions(corpus.tokens[:200], corpus.lengths[:200])
    base = float(repeats[torch.isfinite(result.loss_change)].float().mean())
    hits = int(repeats[result.rise[:, 0], result.rise[:, 1]].sum())
    # Binomial tail: the chance of that many hits among 100 tokens drawn at the base rate.
    tail = sum(math.comb(100, i) * base**i * (1 - base) ** (100 - i) for i in range(hits, 101))
    assert 0.02 < base < 0.3
    assert hits / 100 > 3 * base and tail < 1e-9, (hits, base, tail)
    falls = int(repeats[result.fall[:, 0], result.fall[:, 1]].sum())
    assert falls < hits


@torch.no_grad()
def test_feature_ablation_matches_steering_and_a_plain_mean_loop(model, stream):
    """A transcoder feature removed from the real MLP output: zero ablation equals lens_core.features.steer
    (the layer spliced with its error term, the feature clamped to 0); mean ablation a plain loop."""
    from graph_support import random_transcoders

    from lens_core.features import feature_activations, steer

    tset = random_transcoders(model, d_sae=32, k=6, seed=1)
    layer, feature = 1, 5
    common = dict(component=("feature", layer, feature), corpus_tokens=stream, window_len=WINDOW, top_k=4)
    zero = browse(model, BrowseRequest(method="zero", **common), transcoders=tset)
    corpus = request_corpus(model, BrowseRequest(**common))
    assert zero.stats["mean_abs_change"] > 0
    for w, p in torch.cat([zero.rise[:2], zero.fall[:2]]).tolist():
        tokens = corpus.tokens[w, : int(corpus.lengths[w])][None]
        _, steered = steer(model, tset, tokens, {layer: {feature: 0.0}})
        ref = torch.nn.functional.cross_entropy(steered[0, :-1].float(), tokens[0, 1:], reduction="none")
        assert zero.ablated_loss[w, p] == pytest.approx(float(ref[p]), abs=1e-4)

    clear_memo()
    mean_result = browse(model, BrowseRequest(method="mean", **common), transcoders=tset)
    total, count = torch.zeros(WINDOW), torch.zeros(WINDOW)
    for w in range(corpus.n_windows):
        n = int(corpus.lengths[w])
        acts = feature_activations(model, tset, corpus.tokens[w, :n][None], layers=[layer])[layer][0, :, feature]
        total[:n] += acts
        count[:n] += 1
    mean = total / count
    tc = tset[layer]
    w, p = mean_result.rise[0].tolist()
    tokens = corpus.tokens[w, : int(corpus.lengths[w])]
    kept = {}

    def keep(x, hook):
        kept["x"] = x

    def edit(y, hook):
        a = tc.encode(kept["x"])[..., feature]
        return y + (mean[: y.shape[1]] - a)[..., None] * tc.W_dec[feature]

    logits = model.run_with_hooks(tokens[None], fwd_hooks=[(tc.cfg.hook_in, keep), (tc.cfg.hook_out, edit)])
    ref = torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[1:], reduction="none")
    assert mean_result.ablated_loss[w, p] == pytest.approx(float(ref[p]), abs=1e-4)

    panel = browse_example(model, BrowseExampleRequest(method="zero", window=w, position=p,
                                                       **{k: v for k, v in common.items() if k != "top_k"}),
                           transcoders=tset)
    assert panel.loss_after == pytest.approx(float(zero.ablated_loss[w, p]), abs=1e-4)
    # The feature's DLA: its activation times its decoder row, through the frozen final norm.
    _, cache = model.run_with_cache(tokens[None, : p + 1], names_filter=[tc.cfg.hook_in, "ln_final.hook_scale"])
    act = tc.encode(cache[tc.cfg.hook_in])[0, -1, feature]
    row = tc.W_dec[feature] - tc.W_dec[feature].mean()  # folded LayerNorm: centre, divide by the frozen scale
    expected = act * (row / cache["ln_final.hook_scale"][0, -1]) @ model.W_U[:, panel.next_token_id]
    assert panel.dla == pytest.approx(float(expected), abs=1e-4)
    assert panel.component_label == "L1F5" and parse_component("L1F5") == ("feature", 1, 5)


def test_a_corpus_of_bos_tokens_only_says_it_has_no_text(model):
    from lens_core.corpus import CorpusError
    from lens_core.experiments import BrowseRequest, browse

    bos = int(model.bos_token_id)
    with pytest.raises(CorpusError, match="no text to rank"):
        browse(model, BrowseRequest(corpus_tokens=(bos,) * 300, window_len=32))
