"""Attribution graphs: the replacement model made of transcoders, and its feature graph.

The graph, built in this order:
- ``_frozen``: the frozen model of one prompt (one forward pass; attention, norms and embeddings frozen).
- ``_transcoder_views`` / ``_dictionary_views``: the parts of each dictionary the walk reads (per-layer
  transcoders; skip and cross-layer transcoders), checked against the model.
- ``_replacement``: the local replacement model (transcoders + error nodes) and the exact direct-effect
  edges between all nodes, for per-layer transcoders; ``_clt_walk``: the same walk for skip transcoders
  and CLTs (a CLT feature writes into every later layer).
- ``_expand``: a feature-node budget: rows computed most influential first, stored sparse.
- ``_targets``: the target logits, and the message for a graph over the dense node limit.
- ``_graph_prune``: influence through the graph, node and edge pruning, predicted intervention effects.
- ``_scores``: the replacement and completeness scores, as the published method defines them.
- ``attribution_graph``: the experiment: builds, prunes, checks against the real model, packages.
Checking it against the real model:
- ``graph_interventions``: clamping features in the real model beside the graph's prediction;
  ``_linear_response`` gives that prediction past the dense limit (one batched forward pass, no graph).
  A CLT's clamps are ``lens_core.features.clt_edits`` (shared with the Features page's steering).
- ``full_path_check``: the prediction through every path, attention changes included.
Attention and export:
- ``_qk_split``: one attention score split exactly into (query-side node) x (key-side node) pairs.
- ``qk_attribution``: the experiment: which node pairs make a head attend where it does, in words.
- ``graph_json``: export in the published attribution-graph JSON format (``graph_schema.json``).
"""
