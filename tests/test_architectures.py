"""The submodule map of GPT-NeoX: names, order, and what each module really returns."""

import torch

from sfc_relp.architectures import resolve_path, submodules_for
from sfc_relp.loading import hf_model
from sfc_relp.tracing import tokenize


def test_submodules_in_forward_order(small_model):
    names = [s.name for s in submodules_for(small_model.config)]
    assert names == ["embed", "attn_0", "mlp_0", "resid_0", "attn_1", "mlp_1", "resid_1",
                     "attn_2", "mlp_2", "resid_2"]
    dirs = [s.dictionary_dirname for s in submodules_for(small_model.config)][:4]
    assert dirs == ["embed", "attn_out_layer0", "mlp_out_layer0", "resid_out_layer0"]


def test_output_types_match_the_map(small_model):
    """transformers 5: a layer returns a Tensor, attention a tuple whose first item is (B,T,d)."""
    model = hf_model(small_model)
    seen, order = {}, []
    hooks = []
    for sub in submodules_for(small_model.config):
        module = resolve_path(model, sub.module_path)

        def hook(_module, _inputs, output, sub=sub):
            seen[sub.name] = (sub, output)
            order.append(sub.name)
        hooks.append(module.register_forward_hook(hook))
    try:
        inputs = tokenize(small_model.tokenizer, ["The friends that the boy likes"])
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    assert order == [s.name for s in submodules_for(small_model.config)]
    for name, (sub, output) in seen.items():
        if sub.output_is_tuple:
            assert isinstance(output, tuple) and output[0].shape == (1, 6, 64), name
        else:
            assert isinstance(output, torch.Tensor) and output.shape == (1, 6, 64), name
