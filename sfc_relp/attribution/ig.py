"""Integrated gradients over SAE features and errors, as Marks et al. use it (steps=10).

For each submodule separately, features and error are interpolated between clean and patch
(a(alpha) = (1 - alpha) clean + alpha patch, alpha = k/steps, k = 0..steps-1: a left Riemann
sum); all steps run as one batched forward (each step its own rows, so each has its own
logits) with only that submodule spliced; one backward gives the mean gradient, and
effect = mean gradient * (patch - clean).
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import Attribution, NodeEffects, TaskBatch, linear_effects, logit_diff


class IntegratedGradients(Attribution):
    name = "ig"

    def __init__(self, model, dictionaries, metric=logit_diff, steps: int = 10):
        super().__init__(model, dictionaries, metric)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"integrated gradients needs steps >= 1, got {steps!r}")
        self.steps = steps

    def mean_gradients(self, batch: TaskBatch, clean, patch) -> tuple[dict, dict]:
        """Per submodule: the metric's gradient averaged along the interpolation path."""
        steps, n = self.steps, len(batch)
        device = batch.clean["input_ids"].device
        alphas = (torch.arange(steps, dtype=torch.float32, device=device) / steps).repeat_interleave(n)
        tiled = batch.repeat(steps)
        feature_grads, error_grads = {}, {}
        for name in clean.nodes:
            f0, f1 = clean.nodes[name].features.detach(), patch.nodes[name].features
            e0, e1 = clean.nodes[name].error.detach(), patch.nodes[name].error
            a = alphas.to(f0.device, f0.dtype).view(-1, 1, 1)

            def interpolate(sub, features, error):
                tile = lambda t: t.repeat(steps, 1, 1)
                return (1 - a) * tile(f0) + a * tile(f1), (1 - a) * tile(e0) + a * tile(e1)
            run = self.run(tiled.clean, dictionaries={name: self.dictionaries[name]},
                           edit=interpolate)
            node = run.nodes[name]
            g_f, g_e = torch.autograd.grad(self.metric(run.logits, tiled).sum(),
                                           [node.features, node.error])
            feature_grads[name] = g_f.view(steps, n, *g_f.shape[1:]).mean(0)
            error_grads[name] = g_e.view(steps, n, *g_e.shape[1:]).mean(0)
        return feature_grads, error_grads

    def coefficients(self, batch: TaskBatch, clean, patch) -> tuple[dict, dict]:
        return self.mean_gradients(batch, clean, patch)

    def node_effects(self, batch: TaskBatch) -> NodeEffects:
        with torch.no_grad():
            clean = self.run(batch.clean, grad=False)
            patch = self.run(batch.patch, grad=False)
        feature_grads, error_grads = self.mean_gradients(batch, clean, patch)
        return linear_effects(clean, patch, feature_grads, error_grads)
