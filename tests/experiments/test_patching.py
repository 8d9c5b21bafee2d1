import itertools

import pytest
import torch

from lens_core.experiments import SWEEPS, PatchingRequest, activation_patching
from lens_core.utils import get_act_name

from exp_tiny import random_tokens, tiny, tiny_with_tokenizer

ANSWER, WRONG = 7, 13


def _loop_reference(model, base, source, sweep):
    """One plain forward per cell: run the base prompt with a hook copying the source activation in."""
    activation, kind = SWEEPS[sweep]
    cfg = model.cfg
    n_pos = base.shape[1]
    n_heads = cfg.n_key_value_heads if activation in ("k", "v") else cfg.n_heads
    _, source_cache = model.run_with_cache(source)
    out = {}
    for layer in range(cfg.n_layers):
        name = get_act_name(activation, layer)
        src = source_cache[name][0]
        if kind == "pos":
            cells = [(p,) for p in range(n_pos)]
        elif kind == "head":
            cells = [(h,) if activation == "pattern" else (slice(None), h) for h in range(n_heads)]
        else:
            cells = [(p, h) for h in range(n_heads) for p in range(n_pos)]
        for index in cells:
            def hook(act, hook, index=index):
                act = act.clone()
                act[(0, *index)] = src[index]
                return act

            logits = model.run_with_hooks(base, fwd_hooks=[(name, hook)])[0, -1]
            out[(layer, *[i for i in index if not isinstance(i, slice)])] = (
                float(logits[ANSWER] - logits[WRONG]), float(logits.softmax(-1)[ANSWER]))
    return out


FAMILY_SWEEPS = [("gpt2", s) for s in SWEEPS] + [("llama", s) for s in ("resid_mid", "k_all_pos", "v_all_pos", "head_out_by_pos")] + [
    ("neox", s) for s in ("resid_pre", "mlp_out", "q_all_pos", "pattern_all_pos")]


def _pair(shared_prefix: bool):
    clean = random_tokens(6, seed=10)
    if shared_prefix:  # an IOI-like pair: one token differs, so early positions are identical in both runs
        corrupted = clean.clone()
        corrupted[0, 3] = (clean[0, 3] + 5) % 50
    else:
        corrupted = random_tokens(6, seed=11)
    return clean, corrupted


# (family, sweep, memory budget in MB, shared prefix): a tiny budget gives one row per chunk; the default
# budget batches whole sweeps (rows of later layers join the batch as it passes their layer).
CASES = [(f, s, 256.0, True) for f, s in FAMILY_SWEEPS] + [(f, s, 0.01, False) for f, s in FAMILY_SWEEPS if s in (
    "resid_pre", "attn_out", "head_out_all_pos", "pattern_all_pos", "k_all_pos")]


@pytest.mark.parametrize("family,sweep,budget,shared_prefix", CASES)
def test_every_sweep_matches_a_plain_loop(family, sweep, budget, shared_prefix):
    model = tiny(family)
    clean, corrupted = _pair(shared_prefix)
    calls = []
    result = activation_patching(
        model,
        PatchingRequest(clean_tokens=tuple(clean[0].tolist()), corrupted_tokens=tuple(corrupted[0].tolist()),
                        answer=ANSWER, wrong_answer=WRONG, sweep=sweep, memory_budget_mb=budget),
        progress=lambda done, total: calls.append((done, total)),
    )
    ref = _loop_reference(model, corrupted, clean, sweep)
    shape = tuple(result.logit_diff.shape)
    assert len(ref) == result.logit_diff.numel()
    assert [len(labels) for labels in result.axis_labels] == list(shape)
    _, kind = SWEEPS[sweep]
    for cell in itertools.product(*map(range, shape)):
        key = (cell[0], cell[2], cell[1]) if kind == "head_pos" else cell  # result is [layer, head, pos]
        diff, prob = ref[key]
        assert float(result.logit_diff[cell]) == pytest.approx(diff, abs=1e-5), cell
        assert float(result.answer_prob[cell]) == pytest.approx(prob, abs=1e-5), cell
    assert calls[-1][0] == calls[-1][1] == result.logit_diff.numel()
    if budget < 1:  # one row per chunk: a progress call per changed cell
        assert len(calls) > model.cfg.n_layers


def test_baselines_and_normalization():
    model = tiny("gpt2")
    clean, corrupted = random_tokens(6, seed=20), random_tokens(6, seed=21)
    req = PatchingRequest(clean_tokens=tuple(clean[0].tolist()), corrupted_tokens=tuple(corrupted[0].tolist()),
                          answer=ANSWER, wrong_answer=WRONG, sweep="resid_post")
    result = activation_patching(model, req)
    with torch.no_grad():
        clean_logits, corr_logits = model(clean)[0, -1], model(corrupted)[0, -1]
    assert result.clean_logit_diff == pytest.approx(float(clean_logits[ANSWER] - clean_logits[WRONG]), abs=1e-5)
    assert result.corrupted_logit_diff == pytest.approx(float(corr_logits[ANSWER] - corr_logits[WRONG]), abs=1e-5)
    n = model.cfg.n_layers
    torch.testing.assert_close(result.normalized, (result.logit_diff - result.corrupted_logit_diff)
                               / (result.clean_logit_diff - result.corrupted_logit_diff))
    # After the last block only the last position reaches the metric: patching it there gives the clean run
    # exactly, patching any other position changes nothing.
    assert float(result.normalized[n - 1, -1]) == pytest.approx(1.0, abs=1e-4)
    assert float(result.normalized[n - 1, 0]) == pytest.approx(0.0, abs=1e-4)
    cheap = activation_patching(model, PatchingRequest(**{**req.__dict__, "with_answer_prob": False}))
    torch.testing.assert_close(cheap.logit_diff, result.logit_diff, atol=1e-5, rtol=0)
    assert cheap.answer_prob.isnan().all() and not result.answer_prob.isnan().any()
    noised = activation_patching(model, PatchingRequest(**{**req.__dict__, "direction": "noise"}))
    assert float(noised.normalized[n - 1, -1]) == pytest.approx(0.0, abs=1e-4)
    assert noised.clean_logit_diff == pytest.approx(result.clean_logit_diff)


def test_patching_validation():
    model = tiny_with_tokenizer()
    with pytest.raises(ValueError, match="same number of tokens"):
        activation_patching(model, PatchingRequest(clean_prompt="the cat sat", corrupted_prompt="the dog", answer="mat"))
    with pytest.raises(ValueError, match="not a single token"):
        activation_patching(model, PatchingRequest(clean_prompt="the cat", corrupted_prompt="the dog", answer="on a"))
    with pytest.raises(ValueError, match="unknown sweep"):
        activation_patching(model, PatchingRequest(clean_prompt="the cat", corrupted_prompt="the dog", answer="sat", sweep="nope"))
    with pytest.raises(ValueError, match="resid_mid"):
        activation_patching(tiny("neox"), PatchingRequest(clean_tokens=(1, 2), corrupted_tokens=(2, 1), sweep="resid_mid"))
    result = activation_patching(model, PatchingRequest(clean_prompt="the cat", corrupted_prompt="the dog", answer="sat"))
    assert result.axis_labels[1] == ["0: <|endoftext|>", "1: the", "2: cat"]


@pytest.mark.parametrize("sweep", ["resid_mid", "head_out_by_pos"])
def test_generic_engine_matches_the_loop_too(sweep, monkeypatch):
    """The start_at_layer engine (used when the suffix engine cannot read a model's weights)."""
    from lens_core.experiments import _suffix

    monkeypatch.setattr(_suffix, "supported", lambda model: False)
    model = tiny("gpt2")
    clean, corrupted = _pair(shared_prefix=True)
    result = activation_patching(model, PatchingRequest(clean_tokens=tuple(clean[0].tolist()),
                                                        corrupted_tokens=tuple(corrupted[0].tolist()),
                                                        answer=ANSWER, wrong_answer=WRONG, sweep=sweep))
    ref = _loop_reference(model, corrupted, clean, sweep)
    for cell in itertools.product(*map(range, result.logit_diff.shape)):
        key = (cell[0], cell[2], cell[1]) if len(cell) == 3 else cell
        assert float(result.logit_diff[cell]) == pytest.approx(ref[key][0], abs=1e-5), cell
