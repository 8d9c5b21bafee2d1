"""The bundled model's circuits on real code, measured with the project's detectors (issue 3)."""

from pathlib import Path

import pytest
import torch

from lens_core import HookedTransformer
from training.measure_circuits import code_windows
from lens_core.experiments.views.detectors import DetectorRequest, head_detectors

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "lens_core" / "default_model"

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "model.safetensors").exists(), reason="bundled model not committed")


def test_previous_token_head_in_layer_0_and_induction_in_a_later_layer_on_held_out_code(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = HookedTransformer.from_pretrained("default")
    windows = code_windows(n_rows=8)
    results = [head_detectors(model, DetectorRequest(tokens=tuple(row.tolist()))) for row in windows]
    prev = torch.stack([r.previous_token for r in results]).mean(0)  # [layer, head]
    induction = torch.stack([r.induction for r in results]).mean(0)
    assert prev[0].max() >= 0.4, prev
    # Induction on natural repeats is weaker than on planted ones, but a later layer stands out.
    assert induction[1:].max() >= 0.25 and induction[1:].max() > 3 * induction[0].max(), induction
