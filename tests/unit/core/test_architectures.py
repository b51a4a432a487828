"""The architecture matrix: every architecture of ``conftest.ARCHS`` against its own Hugging Face model.

For each one (tiny random weights, see ``conftest.arch_hf``):

* the residual entering every block equals Hugging Face's ``output_hidden_states``, through every
  adapter path (``embed``, ``residual``, ``run_blocks`` on every slice), also on a right-padded batch;
* the full-forward logits (adapter and the bridge's own forward) equal Hugging Face's;
* per-head ``W_V`` / ``W_O`` (grouped-query heads expanded) equal slices cut by hand from each
  architecture's own projection modules, and the attention output rebuilt from them equals
  ``hook_attn_out``;
* every method of the package runs and gives finite numbers;

and a model the bridge cannot wrap fails in ``wrap`` with a message listing the supported ones.
"""

from __future__ import annotations

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import query_logits
from tvmech.core.models import wrap
from tvmech.core.transformerlens import supported_architectures
from tvmech.data.prompts import encode, make_prompts
from tvmech.interventions.injection import Injection

PROMPT = "Q: hello world\nA: yes"
PADDED = ("Q: cat\nA: Cat", "Q: a much longer prompt\nA:", "xy")
POST_ATTN_NORM = {"gemma2", "gemma3", "olmo2"}  # hook_attn_out is after a norm on the attention output
RESID_TOL, LOGIT_TOL = 1e-5, 1e-4
_CAP = tv.builtin_task("capitalize")
TASK = tv.Task("capitalize", _CAP.examples[:24], _CAP.template)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ``|a - b| / |b|`` (Frobenius norms)."""
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def report(arch: str, what: str, value: float) -> None:
    print(f"ERR {arch:9s} {what:22s} {value:.2e}")  # shown with ``pytest -s``


def _ids(model, text: str) -> torch.Tensor:
    return tv.adapt(model).tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def _hf_states(ref, ids: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    with torch.no_grad():
        out = ref(input_ids=ids, output_hidden_states=True, use_cache=False)
    return out.hidden_states, out.logits


def _as_stream(ad, resid: torch.Tensor, layer: int) -> torch.Tensor:
    """What Hugging Face reports as ``hidden_states[layer]``: the last one is after the final norm."""
    return ad.final_norm(resid) if layer == ad.n_layers else resid


# ----------------------------------------------------------------------------------- 1. residuals
def test_every_adapter_path_gives_the_hidden_states(make_arch, arch):
    model, ref = make_arch(arch)
    ad = tv.adapt(model)
    ids = _ids(model, PROMPT)
    hs, _ = _hf_states(ref, ids)
    L = ad.n_layers
    with torch.no_grad():
        worst = {"embed": rel(ad.embed(ids), hs[0])}
        worst["residual"] = max(rel(_as_stream(ad, ad.residual(ids, l), l), hs[l]) for l in range(L + 1))
        worst["run_blocks"] = max(
            rel(_as_stream(ad, ad.run_blocks(ad.residual(ids, a), a, b), b), hs[b])
            for a in range(L) for b in range(a + 1, L + 1)
        )
    for what, err in worst.items():
        report(arch, what, err)
        assert err < RESID_TOL, (arch, what, err)


def test_right_padded_batch_gives_each_prompts_hidden_states(make_arch, arch):
    model, ref = make_arch(arch)
    ad = tv.adapt(model)
    rows = [_ids(model, t)[0] for t in PADDED]
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=ad.tokenizer.pad_token_id)
    assert len({len(r) for r in rows}) == len(rows)  # lengths differ: padding in play
    worst = 0.0
    with torch.no_grad():
        batched = [ad.residual(tokens, l) for l in range(ad.n_layers + 1)]
        mid = ad.n_layers // 2
        sliced = ad.run_blocks(batched[mid], mid)
        for i, row in enumerate(rows):
            hs, _ = _hf_states(ref, row[None])
            n = len(row)
            worst = max(worst, rel(ad.embed(tokens)[i, :n], hs[0][0]))
            for l, resid in enumerate(batched):
                worst = max(worst, rel(_as_stream(ad, resid[i, :n], l), hs[l][0]))
            worst = max(worst, rel(ad.final_norm(sliced[i, :n]), hs[-1][0]))
    report(arch, "padded batch", worst)
    assert worst < RESID_TOL, (arch, worst)


# ----------------------------------------------------------------------------------- 2. logits
def test_full_forward_logits_equal_hugging_face(make_arch, arch):
    model, ref = make_arch(arch)
    ad = tv.adapt(model)
    ids = _ids(model, PROMPT)
    _, logits = _hf_states(ref, ids)
    with torch.no_grad():
        ours = ad.unembed(ad.residual(ids, ad.n_layers))
        bridge = model(ids)
    errs = {"logits adapter": rel(ours, logits), "logits bridge": rel(bridge, logits)}
    for what, err in errs.items():
        report(arch, what, err)
        assert err < LOGIT_TOL, (arch, what, err)


# ----------------------------------------------------------------------------------- 3. weights
def hf_value_output(ref, arch: str, layer: int, ad) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                                                              torch.Tensor | None]:
    """Per query head ``W_V [H, d, d_head]``, ``b_V [H, d_head]``, ``W_O [H, d_head, d]``, ``b_O [d]`` cut
    by hand from the Hugging Face modules (kv head ``h // group`` for query head ``h``); absent biases
    are ``None``."""
    H, K, dh, d = ad.n_heads, ad.n_kv_heads, ad.d_head, ad.d_model
    if arch == "gpt2":  # Conv1D: weight [d_in, d_out]; c_attn's columns are [q | k | v]
        attn = ref.transformer.h[layer].attn
        w_v = attn.c_attn.weight[:, 2 * d:].reshape(d, H, dh).permute(1, 0, 2)
        b_v = attn.c_attn.bias[2 * d:].reshape(H, dh)
        return w_v, b_v, attn.c_proj.weight.reshape(H, dh, d), attn.c_proj.bias
    if arch == "gpt_neox":  # Linear rows are per head [q, k, v] blocks of d_head rows
        attn = ref.gpt_neox.layers[layer].attention
        w_v = attn.query_key_value.weight.reshape(H, 3, dh, d)[:, 2].transpose(1, 2)
        b_v = attn.query_key_value.bias.reshape(H, 3, dh)[:, 2]
        return w_v, b_v, attn.dense.weight.T.reshape(H, dh, d), attn.dense.bias
    attn = ref.model.layers[layer].self_attn
    if arch == "phi3":  # fused qkv_proj: rows [q (H heads) | k (K heads) | v (K heads)]
        w, b = attn.qkv_proj.weight[(H + K) * dh:], None
    else:
        w, b = attn.v_proj.weight, attn.v_proj.bias
    kv = torch.arange(H) // (H // K)
    w_v = w.reshape(K, dh, d).transpose(1, 2)[kv]
    b_v = None if b is None else b.reshape(K, dh)[kv]
    return w_v, b_v, attn.o_proj.weight.T.reshape(H, dh, d), attn.o_proj.bias


def _hf_layer(ref, arch: str, layer: int):
    return ref.transformer.h[layer] if arch == "gpt2" else (
        ref.gpt_neox.layers[layer] if arch == "gpt_neox" else ref.model.layers[layer])


def test_per_head_weights_equal_hugging_face(make_arch, arch):
    model, ref = make_arch(arch)
    ad = tv.adapt(model)
    shape = (ad.n_layers, ad.n_heads)
    assert ad.W_V.shape == (*shape, ad.d_model, ad.d_head) and ad.W_O.shape == (*shape, ad.d_head, ad.d_model)
    err_v = err_o = 0.0
    for l in range(ad.n_layers):
        w_v, _, w_o, _ = hf_value_output(ref, arch, l, ad)
        err_v, err_o = max(err_v, rel(ad.W_V[l], w_v)), max(err_o, rel(ad.W_O[l], w_o))
    report(arch, "W_V", err_v)
    report(arch, "W_O", err_o)
    assert err_v < 1e-6 and err_o < 1e-6, (arch, err_v, err_o)


def test_attention_output_rebuilt_from_heads_equals_hook_attn_out(make_arch, arch):
    """``attn_out = sum_h (pattern_h @ (norm(x) W_V[h] + b_V[h])) W_O[h] + b_O`` (then the post-attention
    norm, where the architecture has one), and ``z`` equals ``hook_z`` on the way."""
    model, ref = make_arch(arch)
    ad = tv.adapt(model)
    ids = _ids(model, PROMPT)
    names = {n for l in range(ad.n_layers) for n in
             (ad.hook_name(l), ad.act_name(l, "pattern"), ad.act_name(l, "z"), ad.act_name(l, "attn_out"))}
    worst_z = worst = 0.0
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
        for l in range(ad.n_layers):
            w_v, b_v, w_o, b_o = hf_value_output(ref, arch, l, ad)
            values = torch.einsum("bpd,hde->bhpe", ad.input_norm(l, cache[ad.hook_name(l)]), w_v)
            if b_v is not None:
                values = values + b_v[None, :, None]
            z = cache[ad.act_name(l, "pattern")] @ values  # [batch, head, pos, d_head]
            out = torch.einsum("bhpe,hed->bpd", z, w_o)
            out = out if b_o is None else out + b_o
            if arch in POST_ATTN_NORM:
                out = _hf_layer(ref, arch, l).post_attention_layernorm(out)
            worst_z = max(worst_z, rel(z.transpose(1, 2), cache[ad.act_name(l, "z")]))
            worst = max(worst, rel(out, cache[ad.act_name(l, "attn_out")]))
    report(arch, "hook_z", worst_z)
    report(arch, "attn_out rebuilt", worst)
    assert worst_z < 1e-5 and worst < 1e-5, (arch, worst_z, worst)


# ----------------------------------------------------------------------------------- 4. methods
def _finite(x) -> bool:
    return bool(torch.isfinite(torch.as_tensor(x, dtype=torch.float64)).all())


def test_every_method_runs_and_is_finite(make_arch, arch):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    layer, L = 1, ad.n_layers
    prompts = make_prompts(TASK, TASK.examples[:4], 0)
    batch = encode(ad.tokenizer, TASK, prompts)
    cfg = tv.LTVConfig(steps=3, batch_size=4, eval_every=3)

    v = 3 * torch.randn(ad.d_model, generator=torch.Generator().manual_seed(0))
    inj = Injection(v[None, None], (layer,), (-1,))
    with torch.no_grad():
        clean, hit = query_logits(model, batch), query_logits(model, batch, inj)
    assert _finite(hit) and not torch.allclose(clean, hit)

    ltv = tv.learn_task_vector(model, TASK, layers=(layer,), config=cfg, progress=False)
    assert _finite(ltv.vectors) and ltv.vectors.shape[-1] == ad.d_model
    acc = tv.evaluate(model, TASK, TASK.examples[:4], 0, intervention=ltv).accuracy
    assert 0 <= acc <= 1
    sweep = tv.learn_layer_sweep(model, TASK, list(range(L)), config=cfg, progress=False)
    assert [s.layers for s in sweep] == [(l,) for l in range(L)] and all(_finite(s.vectors) for s in sweep)

    assert _finite(tv.vanilla_task_vector(model, TASK, layer, k=2, n=4).vectors)
    heads = tv.function_vector_heads(model, TASK, k=2, n_prompts=4)
    assert heads.effects.shape == (L, ad.n_heads) and _finite(heads.effects) and _finite(heads.outputs)
    assert _finite(tv.function_vector(model, TASK, layer, heads, n_heads=3).vectors)

    ov = tv.ov_circuits(model)
    assert tuple(ov.AB.shape) == (L, ad.n_heads, ad.d_model, ad.d_model) and _finite(ov.AB)
    assert rel(ov.AB, ad.W_V @ ad.W_O) < 1e-6

    scores = tv.taylor_scores(model, ltv, TASK, prompts)
    assert scores.taylor.shape == (L, ad.n_heads) and _finite(scores.taylor) and _finite(scores.p)

    lens = tv.lens_metrics(model, TASK, prompts, ltv)
    assert [r["layer"] for r in lens] == list(range(L + 1))
    assert all(_finite([r["accuracy"], r["p_correct"]]) for r in lens)

    theta = ltv.vectors.reshape(-1) + v  # away from zero, so that the fit sees a real response
    fit = tv.fit_tv_map(model, batch, theta, layer, tv.MapConfig(n_samples=16, n_heldout=4, solver="ridge",
                                                                   batch_size=16))
    assert fit.W.shape == (ad.d_model, ad.d_model) and _finite(fit.W) and _finite([fit.r2_train, fit.r2_heldout])


# ----------------------------------------------------------------------------------- 5. unsupported
def test_an_architecture_the_bridge_cannot_wrap_fails_clearly(make_tokenizer):
    from transformers import BioGptConfig, BioGptForCausalLM

    assert "BioGptForCausalLM" not in supported_architectures()
    tok = make_tokenizer()
    cfg = BioGptConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=64)
    hf = BioGptForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match=r"cannot wrap BioGptForCausalLM; it supports: .*LlamaForCausalLM"):
        wrap(hf, tok, "tiny-biogpt")
