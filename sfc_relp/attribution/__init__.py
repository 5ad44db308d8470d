"""Attribution backends behind one signature: `method(model, dictionaries, metric).attribute(batch)`.

A new method is one new module with an `Attribution` subclass, registered in METHODS.
"""

from ..errors import UserError
from .atp import AttributionPatching
from .base import Attribution, NodeEffects, TaskBatch, logit_diff
from .edges import EdgeEffects, compute_edges
from .exact import ExactPatching
from .ig import IntegratedGradients
from .relp import RelevancePatching

METHODS = {cls.name: cls for cls in (ExactPatching, AttributionPatching, IntegratedGradients,
                                     RelevancePatching)}


def get_method(name: str, model, dictionaries, metric=logit_diff, **options) -> Attribution:
    """An attribution backend by name ('exact', 'atp', 'ig', 'relp')."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](model, dictionaries, metric, **options)


__all__ = ["METHODS", "Attribution", "AttributionPatching", "EdgeEffects", "ExactPatching",
           "IntegratedGradients", "NodeEffects", "RelevancePatching", "TaskBatch",
           "compute_edges", "get_method", "logit_diff"]
