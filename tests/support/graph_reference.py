"""An independent reference for attribution-graph edges: autograd through the model's own forward pass,
frozen by hooks (cached attention patterns and norm scales returned as constants; each MLP output replaced
by its cached value plus a zero leaf, plus the live skip term minus its own value when the dictionary has one,
so that the skip path carries gradient as in the frozen replacement model).

Works for per-layer transcoders (``TranscoderSet`` or a mapping, skip transcoders included) and cross-layer
transcoders through ``Dictionary`` adapters: none of the graph code's matrices are used.
"""

from __future__ import annotations

import torch

from lens_core.features import CrossLayerTranscoder, SkipTranscoder


class Dictionary:
    """The maths of a dictionary, layer by layer, from its own modules."""

    def __init__(self, dictionary, n_layers: int):
        self.d, self.n = dictionary, n_layers
        self.clt = isinstance(dictionary, CrossLayerTranscoder)

    def hook_in(self, l: int) -> str:
        return self.d.hook_in(l) if self.clt else self.d[l].cfg.hook_in

    def pre(self, l: int, x: torch.Tensor) -> torch.Tensor:
        return self.d.pre_acts(x, l) if self.clt else self.d[l].pre_acts(x)

    def encode(self, l: int, x: torch.Tensor) -> torch.Tensor:
        return self.d.encode_layer(x, l) if self.clt else self.d[l].encode(x)

    def decoder(self, s: int, t: int):
        """[d_sae, d_out] from source layer s into layer t, or None."""
        if self.clt:
            return self.d.W_dec[s][:, t - s].detach() if t >= s else None
        return self.d[s].W_dec.detach() if s == t else None

    def b_dec(self, t: int) -> torch.Tensor:
        return self.d.b_dec[t] if self.clt else self.d[t].b_dec

    def skip(self, t: int, x: torch.Tensor):
        if self.clt:
            return x @ self.d.W_skip[t] if self.d.W_skip is not None else None
        tc = self.d[t]
        return tc.skip(x) if isinstance(tc, SkipTranscoder) else None


def reference_rows(model, dictionary, tokens, graph, targets, zero_bos: bool = False) -> torch.Tensor:
    """Rows ``[len(targets), graph.n_nodes]`` of edges into the graph's ``targets`` (node indices: features
    or logits), each source's output dotted with the autograd gradient of the target's input."""
    n = model.cfg.n_layers
    D = Dictionary(dictionary, n)
    names = lambda name: name.endswith(("hook_pattern", "hook_scale", "hook_mlp_out", "hook_embed")) or name in {
        D.hook_in(l) for l in range(n)}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        x_in = [cache[D.hook_in(l)][0].float() for l in range(n)]
        acts = [D.encode(l, x_in[l]).float() for l in range(n)]
        if zero_bos:
            for a in acts:
                a[0] = 0.0
        errors = []
        for t in range(n):
            rec = D.b_dec(t).float() + sum(acts[s] @ D.decoder(s, t).float() for s in range(t + 1)
                                           if D.decoder(s, t) is not None)
            skip = D.skip(t, x_in[t])
            err = cache[f"blocks.{t}.hook_mlp_out"][0].float() - rec - (skip if skip is not None else 0.0)
            if zero_bos:
                err[0] = 0.0
            errors.append(err)
    frozen = [name for name in cache.keys() if name.endswith(("hook_pattern", "hook_scale"))]
    rows = []
    for target in targets:
        leaves = [torch.zeros_like(cache[f"blocks.{l}.hook_mlp_out"], requires_grad=True) for l in range(n)]
        emb = torch.zeros_like(cache["hook_embed"], requires_grad=True)
        live = {}

        def mlp_out(y, hook):
            l = hook.layer()
            out = cache[hook.name] + leaves[l]
            skip = D.skip(l, live[l])
            return out + (skip - skip.detach()) if skip is not None else out

        hooks = [(name, lambda x, hook: cache[hook.name]) for name in frozen]
        hooks += [(D.hook_in(l), lambda x, hook: live.__setitem__(hook.layer(), x) or x) for l in range(n)]
        hooks += [(f"blocks.{l}.hook_mlp_out", mlp_out) for l in range(n)]
        hooks += [("hook_embed", lambda x, hook: x + emb)]
        with torch.enable_grad():
            if target < graph.n_features:
                L, p, f = (int(graph.feature_layer[target]), int(graph.feature_pos[target]), int(graph.feature_index[target]))
                model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=L + 1)
                value = D.pre(L, live[L][0, p])[f]
            else:
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1]
                tok = int(graph.logit_tokens[target - graph.logit_node(0)])
                value = logits[tok] - logits.mean()
            grads = torch.autograd.grad(value, leaves + [emb], allow_unused=True)
        grads = [g[0].float() if g is not None else torch.zeros_like(cache["hook_embed"][0]).float() for g in grads]
        row = torch.zeros(graph.n_nodes)
        for i in range(graph.n_features):
            s, p, f = int(graph.feature_layer[i]), int(graph.feature_pos[i]), int(graph.feature_index[i])
            a = float(graph.activations[i])
            row[i] = sum(float(grads[t][p] @ (a * D.decoder(s, t)[f].float())) for t in range(s, n)
                         if D.decoder(s, t) is not None)
        for t in range(n):
            for p in range(graph.n_pos):
                row[graph.error_node(t, p)] = float(grads[t][p] @ errors[t][p])
        for p in range(graph.n_pos):
            row[graph.embedding_node(p)] = float(grads[n][p] @ cache["hook_embed"][0, p].float())
        rows.append(row)
    return torch.stack(rows)


def completeness_residual(graph) -> torch.Tensor:
    """input - edges - bias (- left-out input) of the feature and logit rows."""
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_node(0), graph.n_nodes)])
    total = graph.adjacency[rows].sum(1) + graph.node_bias[rows]
    if graph.dropped is not None:
        total = total + graph.dropped[rows]
    return graph.node_input[rows] - total
