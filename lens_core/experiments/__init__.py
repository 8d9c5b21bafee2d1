"""Experiments: each is ``experiment(model, request) -> Result``.

A request is a small frozen dataclass (prompt or token ids, targets, options);
a result subclasses :class:`lens_core.results.ExperimentResult`: tensors plus
JSON-able axis labels, ready for a page to draw. Long sweeps also take a
``progress(done, total)`` keyword. ``REGISTRY`` maps a stable name to the
function (for the cache CLI and the app), ``REQUEST_TYPES`` the same name to its
request class.

The experiments are grouped by family, one subpackage each (its docstring says which file does what):

- ``views``: one prompt, read without changing it (predictions, attention, logit lens, DLA, head
  detectors, QK/OV circuits, features on a prompt).
- ``interventions``: change activations and measure (activation and attribution patching, path
  patching, ablation).
- ``edge_circuits``: edge attribution (EAP, EAP-IG), circuits of edges, faithfulness curves.
- ``graphs``: attribution graphs on transcoder replacement models, their interventions and JSON export.
- ``corpus``: browsing a corpus for where a component matters.

Every public name is importable from here (``from lens_core.experiments import X``), and the old flat
module paths (``lens_core.experiments.patching`` ...) still import, as aliases of the moved modules.
"""

from __future__ import annotations

from .interventions.ablation import AblationRequest, AblationResult, AblationSweepRequest, AblationSweepResult, ablation, ablation_sweep
from .views.attention import AttentionRequest, AttentionResult, attention_patterns
from .interventions.attribution import AttributionPatchingRequest, AttributionPatchingResult, attribution_patching
from .graphs.attribution_graph import AttributionGraphRequest, AttributionGraphResult, attribution_graph
from .corpus.browse import BrowseRequest, BrowseResult, browse
from .corpus.browse_example import BrowseExampleRequest, BrowseExampleResult, browse_example
from .views.circuits import (
    CompositionRequest,
    CompositionResult,
    HeadCircuitsRequest,
    HeadCircuitsResult,
    composition,
    composition_scores,
    full_ov_circuit,
    head_circuits,
    ov_circuit,
    ov_copying_scores,
    qk_circuit,
)
from .views.detectors import DetectorRequest, DetectorResult, head_detectors
from .views.dla import DLARequest, DLAResult, direct_logit_attribution
from .edge_circuits.edges import EdgeAttributionRequest, EdgeAttributionResult, edge_attribution
from .edge_circuits.faithfulness import FaithfulnessRequest, FaithfulnessResult, circuit_faithfulness
from .views.features import (
    FeatureActivationsRequest,
    FeatureActivationsResult,
    SteeringRequest,
    SteeringResult,
    UnitActivationRequest,
    UnitActivationResult,
    feature_activations_on_prompt,
    feature_steering,
    unit_activation,
)
from .graphs.graph_interventions import GraphInterventionRequest, GraphInterventionResult, graph_intervention
from .views.logit_lens import LogitLensRequest, LogitLensResult, logit_lens
from .interventions.patching import SWEEPS, PatchingRequest, PatchingResult, activation_patching
from .interventions.path_patching import PathPatchingRequest, PathPatchingResult, path_patching
from .views.predictions import PredictionsRequest, PredictionsResult, predictions
from .graphs.qk_attribution import QKAttributionRequest, QKAttributionResult, qk_attribution

REGISTRY = {
    "attribution_graph": attribution_graph,
    "graph_intervention": graph_intervention,
    "predictions": predictions,
    "attention_patterns": attention_patterns,
    "logit_lens": logit_lens,
    "dla": direct_logit_attribution,
    "activation_patching": activation_patching,
    "attribution_patching": attribution_patching,
    "edge_attribution": edge_attribution,
    "circuit_faithfulness": circuit_faithfulness,
    "path_patching": path_patching,
    "ablation": ablation,
    "ablation_sweep": ablation_sweep,
    "head_detectors": head_detectors,
    "head_circuits": head_circuits,
    "composition": composition,
    "browse": browse,
    "browse_example": browse_example,
    "feature_activations": feature_activations_on_prompt,
    "unit_activation": unit_activation,
    "feature_steering": feature_steering,
    "qk_attribution": qk_attribution,
}

REQUEST_TYPES = {
    "attribution_graph": AttributionGraphRequest,
    "graph_intervention": GraphInterventionRequest,
    "predictions": PredictionsRequest,
    "attention_patterns": AttentionRequest,
    "logit_lens": LogitLensRequest,
    "dla": DLARequest,
    "activation_patching": PatchingRequest,
    "attribution_patching": AttributionPatchingRequest,
    "edge_attribution": EdgeAttributionRequest,
    "circuit_faithfulness": FaithfulnessRequest,
    "path_patching": PathPatchingRequest,
    "ablation": AblationRequest,
    "ablation_sweep": AblationSweepRequest,
    "head_detectors": DetectorRequest,
    "head_circuits": HeadCircuitsRequest,
    "composition": CompositionRequest,
    "browse": BrowseRequest,
    "browse_example": BrowseExampleRequest,
    "feature_activations": FeatureActivationsRequest,
    "unit_activation": UnitActivationRequest,
    "feature_steering": SteeringRequest,
    "qk_attribution": QKAttributionRequest,
}


# The flat module paths of rounds 1-2 (``lens_core.experiments.<module>``), kept importable.
MOVED_MODULES = {
    "predictions": "views.predictions",
    "attention": "views.attention",
    "logit_lens": "views.logit_lens",
    "dla": "views.dla",
    "detectors": "views.detectors",
    "circuits": "views.circuits",
    "features": "views.features",
    "patching": "interventions.patching",
    "_suffix": "interventions._suffix",
    "attribution": "interventions.attribution",
    "ablation": "interventions.ablation",
    "path_patching": "interventions.path_patching",
    "edges": "edge_circuits.edges",
    "faithfulness": "edge_circuits.faithfulness",
    "circuit_graph": "edge_circuits.circuit_graph",
    "attribution_graph": "graphs.attribution_graph",
    "_replacement": "graphs._replacement",
    "_graph_prune": "graphs._graph_prune",
    "graph_interventions": "graphs.graph_interventions",
    "graph_json": "graphs.graph_json",
    "browse": "corpus.browse",
    "browse_components": "corpus.browse_components",
    "browse_example": "corpus.browse_example",
}


def _alias_moved_modules() -> None:
    import importlib
    import sys

    for old, new in MOVED_MODULES.items():
        sys.modules.setdefault(f"{__name__}.{old}", importlib.import_module(f"{__name__}.{new}"))


_alias_moved_modules()
