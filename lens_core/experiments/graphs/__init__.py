"""Attribution graphs: the replacement model made of transcoders, and its feature graph.

- ``_replacement``: the local replacement model (transcoders + error nodes, frozen attention and norms)
  and the exact direct-effect edges between all nodes.
- ``_graph_prune``: influence through the graph, node and edge pruning, predicted intervention effects.
- ``graph_interventions``: clamping features in the real model, to check the graph's predictions.
- ``attribution_graph``: the experiment: builds, prunes, checks against the real model, packages.
- ``_qk_split``: one attention score split exactly into (query-side node) x (key-side node) pairs.
- ``qk_attribution``: the experiment: which node pairs make a head attend where it does, in words.
- ``graph_json``: export in the published attribution-graph JSON format (``graph_schema.json``).
"""
