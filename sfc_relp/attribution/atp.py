"""Attribution patching: (a_patch - a_clean) * d m / d a at the clean input."""

from __future__ import annotations

from .base import Attribution, NodeEffects, TaskBatch, linear_effects


class AttributionPatching(Attribution):
    """AtP (Nanda 2023; Marks et al.'s `attrib`): two forwards, one backward."""

    name = "atp"

    def node_effects(self, batch: TaskBatch) -> NodeEffects:
        clean, patch = self.clean_and_patch(batch)
        feature_grads, error_grads = self.gradients(clean, batch)
        return linear_effects(clean, patch, feature_grads, error_grads)
