"""Relevance patching (the seed paper): AtP with the gradient replaced by LRP coefficients.

The clean forward runs under the model family's LRP composite (`lrp.composite_for`, built
from its architecture record), so the one backward pass propagates relevance with the LN-,
Identity-, Half- (gated MLPs) and 0-rules (epsilon and AH optional); the rules leave the
forward unchanged and are removed when the call returns.
"""

from __future__ import annotations

from ..loading import hf_model
from ..lrp import composite_for
from .base import Attribution, NodeEffects, TaskBatch, linear_effects, logit_diff


class RelevancePatching(Attribution):
    """RelP: (a_patch - a_clean) * LRP propagation coefficient, as cheap as AtP."""

    name = "relp"

    def __init__(self, model, dictionaries, metric=logit_diff, ah_rule: bool = False,
                 epsilon: float | None = None):
        super().__init__(model, dictionaries, metric)
        self.composite = composite_for(hf_model(model), ah=ah_rule, epsilon=epsilon)

    def rules(self):
        """Context manager applying the LRP rules to the model."""
        return self.composite.context(hf_model(self.model))

    def node_effects(self, batch: TaskBatch) -> NodeEffects:
        with self.rules():
            clean, patch = self.clean_and_patch(batch)
            feature_grads, error_grads = self.gradients(clean, batch)
        return linear_effects(clean, patch, feature_grads, error_grads)
