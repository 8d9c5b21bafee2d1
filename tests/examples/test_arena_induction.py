"""examples/arena_induction.py runs end to end on the bundled model and finds the planted circuit."""

import torch

from examples import arena_induction
from lens_core import HookedTransformer


def test_arena_induction_script_finds_the_induction_circuit():
    with torch.inference_mode():
        out = arena_induction.main(HookedTransformer.from_pretrained("default"), verbose=False)
    assert out["pattern_error"] < 1e-5  # the pattern recomputed from q and k is the cached one
    assert out["loss_first_half"] > 7 and out["loss_second_half"] < 1  # the second copy is predicted
    assert out["detectors"]["previous"] == ["L0H0"]
    assert set(out["detectors"]["induction"]) >= {"L1H0", "L1H3"}
    assert out["model_wide_same"]  # the model-wide hook saw what the call's hook saw
    assert out["induction_score"][1].min() > 0.5 and out["induction_score"][[0, 2]].max() < 0.1
    assert out["prev_head"] == 0 and out["induction_head"] in (0, 3)
    assert out["detect_head_previous"].argmax() == 0  # L0H0
    assert out["detect_head_induction"][1].max() == out["detect_head_induction"].max()
    assert out["ablation"].max() > 2 and out["ablation"][0, 0] == out["ablation"].max()  # no previous-token head, no induction
    assert out["full_ov_shape"] == (4096, 4096)
    assert out["ov_copying_top1"] > 10 / 4096  # far above chance
    assert out["pos_prev_fraction"] > 0.8
    k_comp = out["k_comp"][out["prev_head"], out["induction_head"]]
    assert k_comp > 1.5 * out["comp_baseline"] and k_comp > out["q_comp"][out["prev_head"], out["induction_head"]]
