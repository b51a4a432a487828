"""TransformerLens 3.x only: a HookedTransformer the user already has works with tvmech functions.

Skipped on TransformerLens 4.x, which removed HookedTransformer.
"""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import last_logprobs

HookedTransformer = pytest.importorskip("transformer_lens").__dict__.get("HookedTransformer")
pytestmark = pytest.mark.skipif(HookedTransformer is None, reason="TransformerLens >= 4 has no HookedTransformer")


@pytest.fixture(scope="module")
def hooked(make_tokenizer):
    from transformer_lens import HookedTransformerConfig

    tok = make_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=64, n_heads=4, d_head=16, n_key_value_heads=2, d_mlp=128, d_vocab=len(tok),
        n_ctx=256, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        gated_mlp=True, seed=0, default_prepend_bos=False, tokenizer_prepends_bos=False,
    )
    model = HookedTransformer(cfg, tokenizer=tok)
    return model.eval()


def test_adapter_slices_equal_full_forward(hooked):
    ad = tv.adapt(hooked)
    assert not ad.is_bridge and ad.W_V.shape == (3, 4, 64, 16)
    tokens = torch.randint(2, 90, (2, 9))
    with torch.no_grad():
        full = hooked(tokens)
        final = ad.run_blocks(ad.residual(tokens, 1), 1)
    assert torch.allclose(ad.unembed(final), full, atol=1e-5)


def test_evaluate_and_padding_on_hooked_transformer(hooked):
    task = tv.builtin_task("capitalize")
    prompts = tv.make_prompts(task, task.examples[:5], 2, task.examples[5:30])
    together = last_logprobs(hooked, task, prompts)
    alone = torch.cat([last_logprobs(hooked, task, [p]) for p in prompts])
    assert torch.allclose(together, alone, atol=1e-5)
    res = tv.evaluate(hooked, task, task.examples[:5], 2, task.examples[5:30])
    assert res.n == 5 and 0 <= res.accuracy <= 1
