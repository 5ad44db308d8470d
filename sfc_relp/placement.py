"""Where modules and tensors live when a model is on a GPU or split over several devices.

With an accelerate `device_map` every submodule runs on its own device and its output stays
there, so each SAE must sit on the device of the submodule it is spliced into; the inputs
go where the embedding is, and metrics move answer ids to the logits' device.
"""

from __future__ import annotations

import torch

from .architectures import resolve_path, submodules_for


def module_device(module, default="cpu") -> torch.device:
    """The device a module computes on: accelerate's execution device when it has a hook,
    else that of its first parameter or buffer, else `default`."""
    hook = getattr(module, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device(default)


def input_device(model) -> torch.device:
    """Where token ids must go: the input embedding's device."""
    from .loading import hf_model

    return module_device(hf_model(model).get_input_embeddings())


def submodule_devices(model) -> dict[str, torch.device]:
    """{submodule name: device its output is computed on}."""
    from .loading import hf_model

    hf = hf_model(model)
    return {s.name: module_device(resolve_path(hf, s.module_path)) for s in submodules_for(hf.config)}


def place_dictionaries(model, dictionaries: dict, dtype: torch.dtype | None = None) -> dict:
    """Move each SAE to the device of its submodule (and to `dtype` when given), in place."""
    devices = submodule_devices(model)
    for name, ae in dictionaries.items():
        ae.to(device=devices[name], dtype=dtype)
    return dictionaries
