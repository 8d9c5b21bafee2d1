"""Export an attribution graph as the JSON that the public attribution-graph viewers read.

The format is the graph file of Anthropic's attribution-graph frontend as written by the
open-source ``circuit-tracer`` library and read by Neuronpedia's graph viewer: one object
with ``metadata``, ``qParams``, ``nodes`` and ``links``. ``GRAPH_SCHEMA`` (also in
``graph_schema.json`` beside this file) is a JSON Schema for it, written from that format.

What we emit:

- ``metadata``: ``slug``, ``scan`` (the transcoder set's name), ``transcoder_list`` (empty: our
  transcoders are not hosted anywhere), ``prompt_tokens``, ``prompt``, ``node_threshold``,
  ``schema_version`` 1; plus ``info`` (our own: model name, edge threshold, completeness error).
- ``qParams``: ``pinnedIds`` (the selected nodes), ``supernodes`` (each ``[name, node_id, ...]``),
  ``linkType`` "both", ``clickedId``, ``sg_pos`` "".
- ``nodes``: ``node_id`` (features ``{layer}_{feature}_{pos}``, errors ``{layer}_-1_{pos}``,
  embeddings ``E_{token}_{pos}``, logits ``{n_layers + 1}_{token}_{pos}``), ``feature`` (features: the
  Cantor pairing of layer and index, one number per feature across positions; errors -1; embeddings
  the position; logits the token id), ``layer`` (a string: the layer, "E", or n_layers + 1),
  ``ctx_idx``, ``feature_type`` ("cross layer transcoder", "mlp reconstruction error", "embedding",
  "logit"; per-layer transcoders use the same type name, as circuit-tracer does), ``token_prob``,
  ``is_target_logit``, ``run_idx`` 0, ``reverse_ctx_idx`` 0, ``jsNodeId``, ``clerp`` (the label),
  ``influence``, ``activation``.
- ``links``: ``source``, ``target`` (node ids), ``weight`` (the signed edge weight).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

SCHEMA_PATH = Path(__file__).with_name("graph_schema.json")
GRAPH_SCHEMA = json.loads(SCHEMA_PATH.read_text())

FEATURE_TYPES = {"feature": "cross layer transcoder", "error": "mlp reconstruction error", "embedding": "embedding",
                 "logit": "logit"}


def cantor(a: int, b: int) -> int:
    return (a + b) * (a + b + 1) // 2 + b


def node_ids(result) -> list[str]:
    """The viewer's node id of each kept node of an ``AttributionGraphResult``."""
    ids = []
    for kind, layer, pos, feature in zip(result.node_kind, result.node_layer, result.node_pos, result.node_feature):
        if kind == "feature":
            ids.append(f"{layer}_{feature}_{pos}")
        elif kind == "error":
            ids.append(f"{layer}_-1_{pos}")
        elif kind == "embedding":
            ids.append(f"E_{feature}_{pos}")
        else:
            ids.append(f"{result.n_layers + 1}_{feature}_{pos}")
    return ids


def graph_json(result, slug: str, prompt: str, *, labels: Optional[Mapping[int, str]] = None,
               supernodes: Sequence[tuple[str, Sequence[int]]] = (), pinned: Sequence[int] = (),
               scan: str = "circuit-explorer", model_name: str = "") -> dict:
    """The viewer JSON of a graph. ``labels``: node index -> text (the ``clerp``); ``supernodes``: (name,
    node indices); ``pinned``: node indices. Node indices are positions in ``result.node_kind``."""
    labels = dict(labels or {})
    ids = node_ids(result)
    probs = dict(zip(result.logit_ids, result.logit_probs))
    first_logit = result.logit_ids[0] if result.logit_ids else None
    nodes = []
    for i, (kind, layer, pos, feature) in enumerate(zip(result.node_kind, result.node_layer, result.node_pos,
                                                       result.node_feature)):
        if kind == "feature":
            number, layer_name, js = cantor(layer, feature), str(layer), f"{layer}_{feature}-0"
        elif kind == "error":
            number, layer_name, js = -1, str(layer), f"{layer}_-1-{pos}"
        elif kind == "embedding":
            number, layer_name, js = pos, "E", f"E_{feature}-{pos}"
        else:
            number, layer_name, js = feature, str(result.n_layers + 1), f"L_{feature}-{pos}"
        is_logit = kind == "logit"
        token_prob = float(probs.get(feature, 0.0)) if is_logit else 0.0
        default_label = {"error": f"error L{layer} @{pos}", "embedding": result.str_tokens[pos] if pos < len(result.str_tokens) else "",
                         "logit": f"output {result.logit_tokens[result.logit_ids.index(feature)]!r} (p={token_prob:.3f})" if is_logit else "",
                         "feature": f"L{layer} #{feature}"}[kind]
        nodes.append({
            "node_id": ids[i], "feature": int(number), "layer": layer_name, "ctx_idx": int(pos),
            "feature_type": FEATURE_TYPES[kind], "token_prob": token_prob,
            "is_target_logit": bool(is_logit and feature == first_logit), "run_idx": 0, "reverse_ctx_idx": 0,
            "jsNodeId": js, "clerp": str(labels.get(i, default_label)),
            "influence": float(result.node_influence[i]), "activation": float(result.node_activation[i]),
        })
    adjacency = result.adjacency
    targets, sources = adjacency.nonzero(as_tuple=True)
    links = [{"source": ids[s], "target": ids[t], "weight": float(adjacency[t, s])}
             for t, s in zip(targets.tolist(), sources.tolist())]
    settings = result.settings
    return {
        "metadata": {
            "slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": list(result.str_tokens), "prompt": prompt,
            "node_threshold": float(settings.get("node_threshold", 0.8)), "schema_version": 1,
            "info": {"generator": "circuit-explorer lens_core", "model": model_name,
                     "edge_threshold": float(settings.get("edge_threshold", 0.98)),
                     "completeness_error": float(result.completeness_error)},
        },
        "qParams": {
            "pinnedIds": [ids[i] for i in pinned],
            "supernodes": [[str(name)] + [ids[i] for i in members] for name, members in supernodes],
            "linkType": "both", "clickedId": "", "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }
