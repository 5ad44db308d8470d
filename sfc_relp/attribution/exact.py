"""Exact activation patching: the ground truth, many nodes per batched forward.

A node is one feature (or the error) of one submodule, patched to its patch-run value at
every position at once (aggregation 'sum', the default) or at one position (aggregation
'none'); its effect is m(clean with that node patched) - m(clean). With
`per_position_sum=True`, aggregation 'sum' is instead the sum over positions of
single-position patches, as Marks et al.'s code computes it; the two differ when a node
changes at more than one position and the model is not linear in it. Nodes whose value is
the same in both runs have effect exactly 0 and are not run. Each forward holds `chunk`
patched copies of the batch. Exact edges (path patching) patch at all positions at once.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..architectures import submodules_for
from ..dictionaries import decoder_directions
from ..errors import UserError
from .base import AGGREGATIONS, Attribution, NodeEffects, TaskBatch, check_node_ids, logit_diff

ERROR = -1  # feature index standing for the error node


class ExactPatching(Attribution):
    name = "exact"

    def __init__(self, model, dictionaries, metric=logit_diff, chunk: int = 64,
                 progress: bool = False, per_position_sum: bool = False):
        super().__init__(model, dictionaries, metric)
        self.chunk = chunk
        self.progress = progress
        self.per_position_sum = per_position_sum

    def attribute(self, batch: TaskBatch, aggregation: str = "sum", nodes: dict | None = None) -> NodeEffects:
        """Exact effects; `nodes` = {submodule: feature ids, -1 = error} restricts what runs."""
        if aggregation not in AGGREGATIONS:
            raise UserError(f"unknown aggregation {aggregation!r}; use sum or none")
        if aggregation == "sum" and self.per_position_sum:
            return self.attribute(batch, "none", nodes).aggregate("sum")
        with torch.no_grad():
            clean = self.run(batch.clean, grad=False)
            patch = self.run(batch.patch, grad=False)
            base = self.metric(clean.logits, batch)
            per_position = aggregation == "none"
            jobs = self._jobs(clean, patch, nodes, per_position)
            n = len(batch)
            features = {k: torch.zeros_like(v.features) for k, v in clean.nodes.items()}
            errors = {k: torch.zeros_like(v.error[..., 0]) for k, v in clean.nodes.items()}
            for start in tqdm(range(0, len(jobs), self.chunk), disable=None if self.progress else True,
                              desc="exact patching"):
                group = jobs[start:start + self.chunk]
                effects = self._run_group(batch, clean, patch, group, per_position) - base.repeat(len(group))
                effects = effects.view(len(group), n)
                for (name, index, position), effect in zip(group, effects):
                    target = errors[name] if index == ERROR else features[name][..., index]
                    if per_position:
                        target[:, position] = effect
                    else:
                        target[:, -1] = effect  # summed over positions below
        result = NodeEffects(features, errors, "none")
        return result if per_position else result.aggregate("sum")

    def node_effects(self, batch: TaskBatch) -> NodeEffects:
        return self.attribute(batch, "none")

    def edges(self, batch: TaskBatch, down_nodes: dict, up_nodes: dict | None = None,
              chunk: int = 64, batched: bool = True):
        """Exact (path-patching) edge weights into `down_nodes`, from `up_nodes` when given.

        Costs one forward per (upstream, downstream) pair (batched `chunk` at a time): pass the
        circuit's nodes as `up_nodes` on large models. `batched` is accepted for the common
        signature. Patches are at all positions at once (see the module docstring).
        """
        from .edges import EdgeEffects, edge_pairs

        check_node_ids(down_nodes, self.dictionaries)
        check_node_ids(up_nodes or {}, self.dictionaries)
        with torch.no_grad():
            state = _ExactEdges(self, batch)
            result = EdgeEffects(down_nodes={k: torch.as_tensor(v) for k, v in down_nodes.items()})
            for up, down, via in edge_pairs(self.model.config):
                if up not in self.dictionaries or down not in self.dictionaries:
                    continue  # a submodule left out (missing="skip") has no edges
                if down in result.down_nodes and len(result.down_nodes[down]):
                    wanted = None if up_nodes is None else up_nodes.get(up, [])
                    result.weights[(up, down)] = state.weights(up, down, via,
                                                               result.down_nodes[down], wanted)
            last = submodules_for(self.model.config)[-1].name
            if last not in self.dictionaries:
                return result
            restrict = None if up_nodes is None else {last: list(up_nodes.get(last, [])) + [ERROR]}
            effects = self.attribute(batch, "sum", nodes=restrict)
            result.to_output[last] = torch.cat([effects.features[last], effects.errors[last].view(1)])
        return result

    def _jobs(self, clean, patch, nodes, per_position: bool) -> list[tuple[str, int, int | None]]:
        """(submodule, feature or ERROR, position or None) for every node worth running."""
        jobs = []
        for name, node in clean.nodes.items():
            changed = (patch.nodes[name].features != node.features)  # (B, T, F)
            if nodes is None:
                wanted, with_error = torch.arange(changed.shape[-1], device=changed.device), True
            else:
                requested = torch.as_tensor(nodes.get(name, []), dtype=torch.long,
                                            device=changed.device).flatten()
                wanted, with_error = requested[requested >= 0], bool((requested == ERROR).any())
            positions = range(changed.shape[1]) if per_position else [None]
            for t in positions:
                where = changed[:, t] if t is not None else changed.flatten(0, 1)
                active = wanted[where[:, wanted].any(0)]
                jobs += [(name, i, t) for i in active.tolist()]
                if with_error:
                    jobs.append((name, ERROR, t))
        return jobs

    def _run_group(self, batch, clean, patch, group, per_position: bool) -> torch.Tensor:
        n = len(batch)
        tiled = batch.repeat(len(group))

        def edit(sub, features, error):
            mine = [(c, index, position) for c, (name, index, position) in enumerate(group)
                    if name == sub.name]
            if not mine:
                return None
            features, error = features.clone(), error.clone()
            f_patch, e_patch = patch.nodes[sub.name].features, patch.nodes[sub.name].error
            for copy, index, position in mine:
                rows = slice(copy * n, (copy + 1) * n)
                cols = slice(None) if position is None else slice(position, position + 1)
                if index == ERROR:
                    error[rows, cols] = e_patch[:, cols]
                else:
                    features[rows, cols, index] = f_patch[:, cols, index]
            return features, error
        # a splice is transparent, so only the submodules patched in this group need their SAE
        needed = {name: self.dictionaries[name] for name, _, _ in group}
        run = self.run(tiled.clean, dictionaries=needed, edit=edit, grad=False)
        return self.metric(run.logits, tiled)


def _encode_node(ae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = ae.encode(x)
    return features, x - ae.decode(features)


class _ExactEdges:
    """Path patching for edges: weight(u -> d) = m(clean with only d set to the value it takes
    when u is patched along the edge u -> d) - m(clean), averaged over examples.

    Along the edge means: through the module when `via` is the upstream itself (nothing else
    lies between them); into the mid residual alone when `via` is another submodule (the
    direct edge resid_{l-1} -> mlp_l of a sequential model: u's decoded change is added to
    attn_l's output, which enters mid with the identity, so attn_l itself is not changed);
    through the residual sum alone (the skip path) into resid_l when `via` is None.
    """

    def __init__(self, method: "ExactPatching", batch: TaskBatch):
        self.method, self.batch = method, batch
        with torch.no_grad():
            self.clean = method.run(batch.clean, grad=False)
            self.patch = method.run(batch.patch, grad=False)
        self.base = method.metric(self.clean.logits, batch)

    def up_candidates(self, up: str, wanted) -> list[int]:
        """Upstream nodes whose value changes (others have exactly zero edge effect)."""
        changed = (self.patch.nodes[up].features != self.clean.nodes[up].features).flatten(0, 1).any(0)
        ids = changed.nonzero().flatten().tolist() if wanted is None else \
            [int(i) for i in torch.as_tensor(wanted).flatten().tolist() if i < 0 or changed[int(i)]]
        return [i for i in ids if i >= 0] + [ERROR]

    def _shift(self, up: str, u: int) -> torch.Tensor:
        """How u's patch changes its submodule's output (B, T, d)."""
        clean_up, patch_up = self.clean.nodes[up], self.patch.nodes[up]
        if u == ERROR:
            return patch_up.error - clean_up.error
        delta = (patch_up.features[..., u] - clean_up.features[..., u]).unsqueeze(-1)
        direction = decoder_directions(self.method.dictionaries[up], torch.tensor([u]))[0]
        return delta * direction.to(delta.dtype)

    def downstream_values(self, up: str, down: str, via: str | None, ups: list[int]):
        """D's (features, error) when each u in `ups` is patched along the edge: lists per u."""
        dicts = self.method.dictionaries
        patch_up = self.patch.nodes[up]
        values = []
        if via is None:
            x = self.clean.nodes[down].input
            return [_encode_node(dicts[down], x + self._shift(up, u)) for u in ups]
        n = len(self.batch)
        for start in range(0, len(ups), self.method.chunk):
            group = ups[start:start + self.method.chunk]

            def edit(sub, features, error, group=group):
                if sub.name != via:
                    return None
                features, error = features.clone(), error.clone()
                for copy, u in enumerate(group):
                    rows = slice(copy * n, (copy + 1) * n)
                    if via != up:  # into the mid residual: add u's change to via's output
                        error[rows] = error[rows] + self._shift(up, u)
                    elif u == ERROR:
                        error[rows] = patch_up.error
                    else:
                        features[rows, :, u] = patch_up.features[:, :, u]
                return features, error
            run = self.method.run(self.batch.repeat(len(group)).clean, grad=False, edit=edit,
                                  dictionaries={up: dicts[up], via: dicts[via], down: dicts[down]})
            node = run.nodes[down]
            values += [(node.features[c * n:(c + 1) * n], node.error[c * n:(c + 1) * n])
                       for c in range(len(group))]
        return values

    def weights(self, up: str, down: str, via: str | None, down_ids, up_ids) -> torch.Tensor:
        ups = self.up_candidates(up, up_ids)
        values = self.downstream_values(up, down, via, ups)
        pairs = [(row, col, d, u) for row, d in enumerate(torch.as_tensor(down_ids).tolist())
                 for col, u in enumerate(ups)]
        width = self.clean.nodes[up].features.shape[-1]
        out = torch.zeros(len(down_ids), width + 1, dtype=self.base.dtype, device=self.base.device)
        n = len(self.batch)
        for start in range(0, len(pairs), self.method.chunk):
            group = pairs[start:start + self.method.chunk]

            def edit(sub, features, error, group=group):
                if sub.name != down:
                    return None
                features, error = features.clone(), error.clone()
                for copy, (_row, col, d, _u) in enumerate(group):
                    rows = slice(copy * n, (copy + 1) * n)
                    new_features, new_error = values[col]
                    if d == ERROR:
                        error[rows] = new_error
                    else:
                        features[rows, :, d] = new_features[:, :, d]
                return features, error
            tiled = self.batch.repeat(len(group))
            run = self.method.run(tiled.clean, dictionaries={down: self.method.dictionaries[down]},
                                  edit=edit, grad=False)
            effects = (self.method.metric(run.logits, tiled) - self.base.repeat(len(group))).view(len(group), n)
            for (row, _col, _d, u), effect in zip(group, effects):
                out[row, u if u != ERROR else width] = effect.mean()
        return out
