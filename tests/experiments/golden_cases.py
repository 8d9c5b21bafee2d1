"""One small request for every experiment in ``REGISTRY``, on the bundled model, and their saved outputs.

The saved outputs (``golden/outputs.safetensors`` + ``golden/outputs.json``) were written by
``python -m tests.experiments.golden_cases --write`` on the code *before* the experiments were grouped
into subpackages (issue 24); ``test_golden_outputs.py`` checks that every result is still the same bit
for bit. Regenerate only on purpose, when an experiment's numbers are meant to change, and say so in the
commit.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GOLDEN_DIR = Path(__file__).parent / "golden"
PROMPT = " own thread sequences stdout non example useful aut descriptor provided own thread sequences stdout non"
CORRUPTED = " own thread sequences stdout non example useful aut descriptor provided own thread sequences stdout aut"
CLEAN_CORRUPT = dict(clean_prompt=PROMPT, corrupted_prompt=CORRUPTED, answer=" example", wrong_answer=" aut")
CORPUS = ("def size(data):\n    return len(data)\n\nclass Item:\n    def __init__(self, name):\n"
          "        self.name = name\n\n    def get(self):\n        return self.name\n") * 3


def requests() -> dict[str, object]:
    from lens_core import experiments as ex

    return {
        "predictions": ex.PredictionsRequest(prompt=PROMPT),
        "attention_patterns": ex.AttentionRequest(prompt=PROMPT),
        "logit_lens": ex.LogitLensRequest(prompt=PROMPT, targets=(" example",)),
        "dla": ex.DLARequest(prompt=PROMPT, answer=" example", wrong_answer=" aut", neuron_layer=1),
        "activation_patching": ex.PatchingRequest(**CLEAN_CORRUPT),
        "activation_patching_heads": ex.PatchingRequest(**CLEAN_CORRUPT, sweep="head_out_by_pos"),
        "attribution_patching": ex.AttributionPatchingRequest(**CLEAN_CORRUPT),
        "edge_attribution": ex.EdgeAttributionRequest(**CLEAN_CORRUPT),
        "edge_attribution_ig": ex.EdgeAttributionRequest(**CLEAN_CORRUPT, method="eap_ig", ig_steps=3),
        "circuit_faithfulness": ex.FaithfulnessRequest(**CLEAN_CORRUPT, n_edges=20, curve_points=4),
        "path_patching": ex.PathPatchingRequest(**CLEAN_CORRUPT),
        "ablation": ex.AblationRequest(prompt=PROMPT, components=(("head", 1, 3),), answer=" example"),
        "ablation_sweep": ex.AblationSweepRequest(prompt=PROMPT, answer=" example"),
        "head_detectors": ex.DetectorRequest(seq_len=20, batch=2),
        "head_circuits": ex.HeadCircuitsRequest(layer=1, head=3),
        "composition": ex.CompositionRequest(),
        "browse": ex.BrowseRequest(corpus_text=CORPUS, window_len=32, top_k=5),
        "browse_example": ex.BrowseExampleRequest(corpus_text=CORPUS, window_len=32, position=5),
        "feature_activations": ex.FeatureActivationsRequest(prompt=PROMPT),
        "unit_activation": ex.UnitActivationRequest(prompt=PROMPT, layer=1, index=3),
        "feature_steering": ex.SteeringRequest(prompt=PROMPT, edits=((1, 3, 0.0),)),
        "attribution_graph": ex.AttributionGraphRequest(prompt=PROMPT, check_top=5),
        "graph_intervention": ex.GraphInterventionRequest(prompt=PROMPT, clamps=((1, 15, 961, 0.0),)),
        "qk_attribution": ex.QKAttributionRequest(prompt=PROMPT, layer=1, head=3),  # added after the move (issue 21)
    }


def run_all(model) -> dict[str, tuple[dict[str, torch.Tensor], dict]]:
    from lens_core.experiments import REGISTRY, REQUEST_TYPES

    kinds = {cls: name for name, cls in REQUEST_TYPES.items()}
    out = {}
    for case, request in requests().items():
        result = REGISTRY[kinds[type(request)]](model, request)
        out[case] = result.to_parts()
    return out


def flatten(outputs) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {}
    for case, (parts, info) in outputs.items():
        for field, value in parts.items():
            tensors[f"{case}.{field}"] = value
        meta[case] = info
    return tensors, meta


def write() -> None:
    from lens_core import HookedTransformer

    model = HookedTransformer.from_pretrained("default")
    tensors, meta = flatten(run_all(model))
    GOLDEN_DIR.mkdir(exist_ok=True)
    save_file(tensors, str(GOLDEN_DIR / "outputs.safetensors"))
    machine = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "machine": platform.machine()}
    (GOLDEN_DIR / "outputs.json").write_text(json.dumps({"machine": machine, "results": meta}, indent=1,
                                                        sort_keys=True, default=str))


def load() -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(str(GOLDEN_DIR / "outputs.safetensors")), json.loads((GOLDEN_DIR / "outputs.json").read_text())


if __name__ == "__main__" and "--write" in sys.argv:
    write()
