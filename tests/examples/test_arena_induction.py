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


def test_arena_induction_script_runs_every_step_on_the_chapters_attention_only_model(capsys):
    """The chapter's config (shortformer, no norms, attention only, use_attn_result) with random weights (no
    checkpoint here), a narrower vocabulary and context to stay fast: every step runs, and the identities the
    chapter checks hold."""
    with torch.inference_mode():
        model = arena_induction.arena_model(weights_path="/nonexistent.pth", d_vocab=2000, n_ctx=128)
        out = arena_induction.main(model, seq_len=10, batch=1, verbose=False)
    said = capsys.readouterr().out
    assert "random weights" in said and "bundled model's" in said  # nothing replaced silently
    cfg = model.cfg
    assert cfg.attn_only and cfg.normalization_type is None and cfg.positional_embedding_type == "shortformer"
    assert "blocks.0.hook_mlp_out" not in model.hook_dict and "blocks.0.attn.hook_result" in model.hook_dict
    assert out["pattern_error"] < 1e-5
    assert out["logit_attr_error"] < 1e-4 and out["qk_decomposition_error"] < 1e-4 and out["comp_scores_error"] < 1e-5
    assert out["ablation"].shape == out["mean_ablation"].shape == (2, 12)
    assert out["full_ov_shape"] == (2000, 2000) and 0 <= out["ov_top1_acc"] <= 1
    assert out["model_wide_same"]
