"""The bundled default model's induction circuit, found by the detectors and confirmed by ablation."""

from pathlib import Path

import pytest

from lens_core import HookedTransformer
from lens_core.experiments.interventions.ablation import AblationRequest, ablation
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors, repeated_random_tokens

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "lens_core" / "default_model"

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DIR / "config.json").exists() or not (DEFAULT_DIR / "model.safetensors").exists(),
    reason="the bundled default model (lens_core/default_model) is not committed yet",
)


@pytest.fixture(scope="module")
def model():
    return HookedTransformer.from_pretrained("default")


def test_induction_heads_are_found_and_matter(model):
    seq_len = min(50, (model.cfg.n_ctx - 1) // 2)
    scores = head_detectors(model, DetectorRequest(seq_len=seq_len, batch=4, seed=0))
    induction_heads = [(l, h) for l in range(1, model.cfg.n_layers) for h in range(model.cfg.n_heads)
                       if scores.induction[l, h] >= 0.4]
    assert induction_heads, f"no head with induction score >= 0.4 in a later layer: {scores.induction}"
    first = min(l for l, _ in induction_heads)
    assert (scores.previous_token[:first] >= 0.4).any(), (
        f"no previous-token head (>= 0.4) before layer {first}: {scores.previous_token}")

    tokens = repeated_random_tokens(model, seq_len, batch=1, seed=1)
    result = ablation(model, AblationRequest(tokens=tuple(tokens[0].tolist()), method="zero",
                                             components=tuple(("head", l, h) for l, h in induction_heads)))
    # loss_per_token[i] predicts token i + 1; the second copy's tokens after its first: i >= seq_len + 1.
    second_half = slice(seq_len + 1, None)
    base = float(result.loss_per_token[second_half].mean())
    ablated = float(result.ablated_loss_per_token[second_half].mean())
    assert ablated > base + 1.0, (base, ablated)
    # A head that copies lowers the loss on the repeat far below the loss on the random first copy.
    assert base < float(result.loss_per_token[:seq_len].mean()) - 1.0
