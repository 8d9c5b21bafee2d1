import pytest
import torch

from lens_core.experiments.interventions.ablation import AblationRequest, AblationSweepRequest, ablation, ablation_sweep

from exp_tiny import random_tokens, tiny

ANSWER, WRONG = 7, 13


def _by_hand(model, tokens, hooks):
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="none")
    return loss, float(logits[0, -1, ANSWER] - logits[0, -1, WRONG])


def _set_head(head, value):
    def hook(act, hook):
        act = act.clone()
        act[:, :, head] = value
        return act
    return hook


def _check(result, loss, metric):
    torch.testing.assert_close(result.ablated_loss_per_token, loss, atol=1e-5, rtol=1e-4)
    assert result.ablated_metric == pytest.approx(metric, abs=1e-5)


def test_zero_and_mean_ablation_of_a_head_by_hand():
    model = tiny("gpt2")
    tokens = random_tokens(6, seed=40)
    refs = [random_tokens(n, seed=41 + n) for n in (4, 6, 9)]
    base = dict(tokens=tuple(tokens[0].tolist()), components=(("head", 1, 2),), answer=ANSWER, wrong_answer=WRONG)
    zero = ablation(model, AblationRequest(**base, method="zero"))
    _check(zero, *_by_hand(model, tokens, [("blocks.1.attn.hook_z", _set_head(2, 0.0))]))
    clean_loss, clean_metric = _by_hand(model, tokens, [])
    torch.testing.assert_close(zero.loss_per_token, clean_loss, atol=1e-5, rtol=1e-4)
    assert zero.metric == pytest.approx(clean_metric, abs=1e-5)
    assert zero.component_labels == ["L1H2"]

    ref_z = [model.run_with_cache(r)[1]["z", 1][0, :, 2] for r in refs]  # [pos_i, d_head]
    mean_all = torch.cat(ref_z).mean(0)
    result = ablation(model, AblationRequest(**base, method="mean", reference_tokens=tuple(tuple(r[0].tolist()) for r in refs)))
    _check(result, *_by_hand(model, tokens, [("blocks.1.attn.hook_z", _set_head(2, mean_all))]))

    same = [random_tokens(6, seed=50 + i) for i in range(3)]
    per_pos = torch.stack([model.run_with_cache(r)[1]["z", 1][0, :, 2] for r in same]).mean(0)  # [pos, d_head]
    same_tokens = tuple(tuple(r[0].tolist()) for r in same)
    result = ablation(model, AblationRequest(**base, method="mean", mean_over="prompts", reference_tokens=same_tokens))
    _check(result, *_by_hand(model, tokens, [("blocks.1.attn.hook_z", _set_head(2, per_pos))]))

    # Resample: the ablated run equals the run with one reference's activation.
    result = ablation(model, AblationRequest(**base, method="resample", reference_tokens=same_tokens, seed=3))
    candidates = [_by_hand(model, tokens, [("blocks.1.attn.hook_z", _set_head(2, model.run_with_cache(r)[1]["z", 1][0, :, 2]))])
                  for r in same]
    assert any(abs(result.ablated_metric - m) < 1e-5 for _, m in candidates)
    again = ablation(model, AblationRequest(**base, method="resample", reference_tokens=same_tokens, seed=3))
    assert again.ablated_metric == result.ablated_metric


def test_zero_ablating_a_layer_passes_its_input_through():
    model = tiny("gpt2")
    tokens = random_tokens(6, seed=42)
    result = ablation(model, AblationRequest(tokens=tuple(tokens[0].tolist()), components=(("layer", 1),),
                                             answer=ANSWER, wrong_answer=WRONG))
    saved = {}
    hooks = [("blocks.1.hook_resid_pre", lambda act, hook: saved.setdefault("x", act)),
             ("blocks.1.hook_resid_post", lambda act, hook: saved["x"])]
    _check(result, *_by_hand(model, tokens, hooks))


@pytest.mark.parametrize("target,method", [("heads", "zero"), ("heads", "mean"), ("attn", "mean"), ("mlp", "resample")])
def test_sweep_matches_single_ablations(target, method):
    model = tiny("llama")
    tokens = random_tokens(6, seed=43)
    refs = tuple(tuple(random_tokens(6, seed=60 + i)[0].tolist()) for i in range(2))
    common = dict(tokens=tuple(tokens[0].tolist()), method=method, reference_tokens=refs, answer=ANSWER, wrong_answer=WRONG)
    sweep = ablation_sweep(model, AblationSweepRequest(**common, target=target, memory_budget_mb=0.01))
    for l in range(model.cfg.n_layers):
        heads = range(model.cfg.n_heads) if target == "heads" else [None]
        for h in heads:
            component = ("head", l, h) if h is not None else (target, l)
            single = ablation(model, AblationRequest(**common, components=(component,)))
            cell = (l, h) if h is not None else (l,)
            assert float(sweep.loss[cell]) == pytest.approx(float(single.ablated_loss_per_token.mean()), abs=1e-5)
            assert float(sweep.metric[cell]) == pytest.approx(single.ablated_metric, abs=1e-5)
            assert float(sweep.metric_change[cell]) == pytest.approx(single.ablated_metric - single.metric, abs=1e-5)


def test_ablation_validation():
    model = tiny("gpt2")
    toks = (1, 2, 3, 4)
    with pytest.raises(ValueError, match="reference prompts"):
        ablation(model, AblationRequest(tokens=toks, components=(("mlp", 0),), method="resample"))
    with pytest.raises(ValueError, match="4 tokens"):
        ablation(model, AblationRequest(tokens=toks, components=(("mlp", 0),), method="resample", reference_tokens=((1, 2),)))
    with pytest.raises(ValueError, match="unknown component"):
        ablation(model, AblationRequest(tokens=toks, components=(("neuron", 0),)))
    with pytest.raises(ValueError, match="layer"):
        ablation(model, AblationRequest(tokens=toks, components=(("attn", 7),)))
    result = ablation(model, AblationRequest(tokens=toks, components=(("attn", 0),)))
    assert result.metric is None and result.ablated_metric is None
