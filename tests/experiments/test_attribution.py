"""Attribution patching: every cell is (a_source - a_base) . grad, checked by finite differences."""

import functools

import pytest
import torch
from exp_tiny import HF

from lens_core import HookedTransformer
from lens_core.experiments.interventions.attribution import AttributionPatchingRequest, attribution_patching, correlation
from lens_core.experiments.interventions.patching import PatchingRequest, activation_patching
from lens_core.utils import get_act_name

CLEAN, CORRUPTED = (3, 8, 1, 20, 7), (3, 9, 1, 21, 7)


@functools.lru_cache(maxsize=None)
def model64() -> HookedTransformer:
    return HookedTransformer.from_hf_model(HF["gpt2"](0)).to(torch.float64)


def metric(model, tokens, hooks):
    logits = model.run_with_hooks(torch.tensor([tokens]), fwd_hooks=hooks)
    return float(logits[0, -1, 4] - logits[0, -1, 5])


@pytest.mark.parametrize("sweep,direction", [("resid_pre", "denoise"), ("head_out_by_pos", "denoise"),
                                             ("k_all_pos", "noise"), ("pattern_all_pos", "denoise"), ("mlp_out", "noise")])
def test_every_cell_matches_a_finite_difference(sweep, direction):
    model = model64()
    request = AttributionPatchingRequest(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=4, wrong_answer=5,
                                         sweep=sweep, direction=direction)
    result = attribution_patching(model, request)
    base, source = (CORRUPTED, CLEAN) if direction == "denoise" else (CLEAN, CORRUPTED)
    activation = {"resid_pre": "resid_pre", "head_out_by_pos": "z", "k_all_pos": "k", "pattern_all_pos": "pattern",
                  "mlp_out": "mlp_out"}[sweep]
    names = [get_act_name(activation, l) for l in range(model.cfg.n_layers)]
    _, source_cache = model.run_with_cache(torch.tensor([source]), names_filter=names)
    base_metric = metric(model, base, [])
    eps = 1e-6
    for index in torch.cartesian_prod(*[torch.arange(n) for n in result.logit_diff.shape]).tolist():
        layer, cell = index[0], tuple(index[1:])
        if result.axes[1:] == ["pos"]:
            where = (0, cell[0])
        elif result.axes[1:] == ["head", "pos"]:
            where = (0, cell[1], cell[0])
        elif activation == "pattern":
            where = (0, cell[0])
        else:
            where = (0, slice(None), cell[0])

        def nudge(x, hook, sign, layer=layer, where=where):
            if hook.name != names[layer]:
                return x
            x = x.clone()
            x[where] = x[where] + sign * eps * (source_cache[hook.name][where] - x[where])
            return x

        plus = metric(model, base, [(names[layer], functools.partial(nudge, sign=1.0))])
        minus = metric(model, base, [(names[layer], functools.partial(nudge, sign=-1.0))])
        expected = base_metric + (plus - minus) / (2 * eps)
        assert float(result.logit_diff[tuple(index)]) == pytest.approx(expected, abs=1e-5, rel=1e-6), (sweep, index)


def test_same_axes_as_exact_patching_and_correlated():
    model = model64()
    kwargs = dict(clean_tokens=CLEAN, corrupted_tokens=CORRUPTED, answer=4, wrong_answer=5, sweep="attn_out")
    approx = attribution_patching(model, AttributionPatchingRequest(**kwargs))
    exact = activation_patching(model, PatchingRequest(**kwargs))
    assert approx.axes == exact.axes and approx.axis_labels == exact.axis_labels
    assert approx.logit_diff.shape == exact.logit_diff.shape
    assert approx.clean_logit_diff == pytest.approx(exact.clean_logit_diff, abs=1e-9)
    assert approx.corrupted_logit_diff == pytest.approx(exact.corrupted_logit_diff, abs=1e-9)
    # Patching position 0 changes nothing (same token): both are exactly the base value there.
    torch.testing.assert_close(approx.logit_diff[:, 0].double(), exact.logit_diff[:, 0].double(), atol=1e-6, rtol=0)
    assert -1.0 <= correlation(exact, approx) <= 1.0
    assert correlation(exact, exact) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same sweep"):
        correlation(exact, attribution_patching(model, AttributionPatchingRequest(**{**kwargs, "sweep": "head_out_all_pos"})))
