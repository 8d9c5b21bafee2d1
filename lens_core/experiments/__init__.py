"""Experiments: each is ``experiment(model, request) -> Result``.

A request is a small frozen dataclass (prompt or token ids, targets, options);
a result subclasses :class:`lens_core.results.ExperimentResult`: tensors plus
JSON-able axis labels, ready for a page to draw. Long sweeps also take a
``progress(done, total)`` keyword. ``REGISTRY`` maps a stable name to the
function (for the cache CLI and the app), ``REQUEST_TYPES`` the same name to its
request class.
"""

from __future__ import annotations

from .ablation import AblationRequest, AblationResult, AblationSweepRequest, AblationSweepResult, ablation, ablation_sweep
from .attention import AttentionRequest, AttentionResult, attention_patterns
from .attribution import AttributionPatchingRequest, AttributionPatchingResult, attribution_patching
from .attribution_graph import AttributionGraphRequest, AttributionGraphResult, attribution_graph
from .browse import BrowseRequest, BrowseResult, browse
from .browse_example import BrowseExampleRequest, BrowseExampleResult, browse_example
from .circuits import (
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
from .detectors import DetectorRequest, DetectorResult, head_detectors
from .dla import DLARequest, DLAResult, direct_logit_attribution
from .edges import EdgeAttributionRequest, EdgeAttributionResult, edge_attribution
from .faithfulness import FaithfulnessRequest, FaithfulnessResult, circuit_faithfulness
from .features import (
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
from .graph_interventions import GraphInterventionRequest, GraphInterventionResult, graph_intervention
from .logit_lens import LogitLensRequest, LogitLensResult, logit_lens
from .patching import SWEEPS, PatchingRequest, PatchingResult, activation_patching
from .path_patching import PathPatchingRequest, PathPatchingResult, path_patching
from .predictions import PredictionsRequest, PredictionsResult, predictions

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
}
