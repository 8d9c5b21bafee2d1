"""The experiments moved into subpackages (issue 24); every import path users have is still good.

"Copy as Python" wrote ``from lens_core.experiments.<module> import <Request>, <function>`` in rounds
1-2 and writes ``from lens_core.experiments import ...`` now; both kinds of script must keep running.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lens_core.experiments as experiments

# What rounds 1-2's snippets imported, module by module (the request classes and functions of REGISTRY).
OLD_SNIPPET_IMPORTS = {
    "predictions": ["PredictionsRequest", "predictions"],
    "attention": ["AttentionRequest", "attention_patterns"],
    "logit_lens": ["LogitLensRequest", "logit_lens"],
    "dla": ["DLARequest", "direct_logit_attribution"],
    "patching": ["PatchingRequest", "activation_patching", "SWEEPS"],
    "attribution": ["AttributionPatchingRequest", "attribution_patching"],
    "edges": ["EdgeAttributionRequest", "edge_attribution"],
    "faithfulness": ["FaithfulnessRequest", "circuit_faithfulness"],
    "path_patching": ["PathPatchingRequest", "path_patching"],
    "ablation": ["AblationRequest", "AblationSweepRequest", "ablation", "ablation_sweep"],
    "detectors": ["DetectorRequest", "head_detectors"],
    "circuits": ["HeadCircuitsRequest", "CompositionRequest", "head_circuits", "composition"],
    "browse": ["BrowseRequest", "browse"],
    "browse_example": ["BrowseExampleRequest", "browse_example"],
    "features": ["FeatureActivationsRequest", "UnitActivationRequest", "SteeringRequest",
                 "feature_activations_on_prompt", "unit_activation", "feature_steering"],
    "attribution_graph": ["AttributionGraphRequest", "attribution_graph"],
    "graph_interventions": ["GraphInterventionRequest", "graph_intervention"],
    "graph_json": ["node_ids"],
    "circuit_graph": ["edge_table"],
}


@pytest.mark.parametrize("module", sorted(OLD_SNIPPET_IMPORTS))
def test_old_module_paths_import_the_same_objects(module):
    old = importlib.import_module(f"lens_core.experiments.{module}")
    new = importlib.import_module(f"lens_core.experiments.{experiments.MOVED_MODULES[module]}")
    assert old is new
    for name in OLD_SNIPPET_IMPORTS[module]:
        assert getattr(old, name) is getattr(new, name)


def test_every_registry_function_and_request_is_exported_at_the_top():
    for name, fn in experiments.REGISTRY.items():
        assert getattr(experiments, fn.__name__) is fn, name
        request = experiments.REQUEST_TYPES[name]
        assert getattr(experiments, request.__name__) is request, name


def test_an_old_snippet_runs_in_a_fresh_process():
    script = (
        "from lens_core.experiments.patching import PatchingRequest, activation_patching\n"
        "from lens_core.experiments.edges import EdgeAttributionRequest, edge_attribution\n"
        "import lens_core.experiments.detectors as d\n"
        "assert d.__name__ == 'lens_core.experiments.views.detectors'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_snippets_import_from_the_stable_path():
    from ui.export import stable_module

    assert stable_module(experiments.activation_patching, experiments.PatchingRequest) == "lens_core.experiments"
    from lens_core.experiments.graphs.graph_json import node_ids

    assert stable_module(node_ids) == "lens_core.experiments.graphs.graph_json"  # not exported at the top


def test_each_subpackage_says_what_it_holds():
    for group in ("views", "interventions", "edge_circuits", "graphs", "corpus"):
        package = importlib.import_module(f"lens_core.experiments.{group}")
        doc = package.__doc__ or ""
        modules = {m.split(".", 1)[1] for m in experiments.MOVED_MODULES.values() if m.startswith(group + ".")}
        assert modules, group
        for module in modules:
            assert f"``{module}``" in doc, (group, module)
