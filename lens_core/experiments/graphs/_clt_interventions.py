"""Feature interventions with a cross-layer transcoder, in the real model (``graph_interventions`` and
``full_path_check`` call these for a ``CrossLayerTranscoder``). The hooks live in ``lens_core.features.clt_edits``,
shared with the Features page's steering."""

from __future__ import annotations

from lens_core.features.clt_edits import check_clt_clamp, clt_edit_hooks, clt_intervention_hooks

__all__ = ["check_clt_clamp", "clt_edit_hooks", "clt_intervention_hooks"]
