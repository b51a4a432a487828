"""The architecture matrix's invariants: every decomposition sums to what the forward pass measures.

On every architecture of ``conftest.ARCHS`` (tiny random models, every 1-D weight randomised, post-norms
included), in float64 so that the identities are checked to rounding (the Gemma norms compute in float32
whatever the model's dtype, so their rows show float32 rounding), each to 1e-5 relative:

(a) with every attention pattern held at the θ run's, the packaged OV effect of θ at its own block equals the
    measured change of that block's ``hook_attn_out`` at the query;
(b) the per-head outputs (as function vectors use them) and the rest (bias, post-norm shift) sum to
    ``hook_attn_out``;
(c) the direct MLP path equals the measured change of the MLP output when only that MLP's input changes;
(d) clean final stream + θ + Σ Δattn + Σ Δmlp = final stream with θ, at the query;
(e) with every path open the path-restricted run is the injected run (logits, hence predictions), and each path
    alone reaches only what it names;
(f) every mechanism experiment runs (tests/unit/experiments/test_mechanism_matrix.py).

``pytest -s`` prints ``INV <arch> <invariant> <largest relative error>``: the table in README.
"""

from __future__ import annotations

import pytest
import torch

import tvmech as tv
from tvmech.analysis.ov import capture, packaged_ov_effect
from tvmech.data.prompts import encode, make_prompts
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual, run_blocks
from tvmech.interventions.paths import PathRestricted
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import head_outputs

TOL = 1e-5
TASK = tv.builtin_task("capitalize")
POSITIONS = (-1, -3)  # θ at the query, and two tokens before it


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (Frobenius)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def report(arch: str, what: str, err: float) -> None:
    print(f"INV {arch:9s} {what:28s} {err:.1e}")


def _setup(make_arch64, arch):
    model = make_arch64(arch)
    ad = tv.adapt(model)
    batch = encode(ad.tokenizer, TASK, make_prompts(TASK, TASK.examples[:5], 0))
    return model, ad, batch


def _theta(ad, layer: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + layer)
    return (3 * torch.randn(ad.d_model, generator=g)).to(ad.dtype)


def _sites(ad):
    return [(layer, pos) for layer in range(ad.n_layers) for pos in POSITIONS]


def test_a_ov_effect_is_the_attention_change_with_patterns_frozen(make_arch64, arch):
    model, ad, batch = _setup(make_arch64, arch)
    worst = 0.0
    for layer, pos in _sites(ad):
        vec = TaskVector.for_model(model, _theta(ad, layer)[None, None], (layer,), (pos,))
        cap = capture(model, vec, batch, freeze_patterns=True)
        measured = cap.attn_delta[:, 0]
        assert measured.norm() > 1e-3 * cap.theta.norm()  # θ does change the block's attention output
        worst = max(worst, rel(packaged_ov_effect(model, cap)[:, 0], measured))
    report(arch, "(a) OV effect, frozen", worst)
    assert worst < TOL, (arch, worst)


def test_a_without_freezing_the_patterns_the_ov_effect_is_not_the_change(make_arch64, arch):
    """The control of (a): θ at the query also moves the query's own attention pattern."""
    model, ad, batch = _setup(make_arch64, arch)
    vec = TaskVector.for_model(model, _theta(ad, 0)[None, None], (0,), (-1,))
    cap = capture(model, vec, batch)
    assert rel(packaged_ov_effect(model, cap)[:, 0], cap.attn_delta[:, 0]) > 1e-3


def test_b_head_outputs_sum_to_the_attention_output(make_arch64, arch):
    model, ad, batch = _setup(make_arch64, arch)
    sites = [(l, p) for l in range(ad.n_layers) for p in ("z", "attn_out")]
    rec = Capture(sites)
    with torch.no_grad():
        residual(ad, batch.tokens, ad.n_layers, intervention=rec, ctx=batch.query_pos)
    z = torch.stack([rec[l, "z"] for l in range(ad.n_layers)], 2)  # [batch, pos, layer, head, d_head]
    per_head = head_outputs(model, z)  # what function vectors sum
    worst = 0.0
    for l in range(ad.n_layers):
        heads, rest = ad.head_outputs(l, rec[l, "z"])
        assert torch.equal(heads, per_head[:, :, l])
        worst = max(worst, rel(heads.sum(-2) + rest, rec[l, "attn_out"]),
                    rel(ad.attention_output(l, rec[l, "z"]), rec[l, "attn_out"]))
    report(arch, "(b) heads + rest = attn_out", worst)
    assert worst < TOL, (arch, worst)


def _mlp_out(ad, batch, h, layer, pos, intervention=None) -> torch.Tensor:
    rec = Capture([(layer, "mlp_out")], positions=(pos,))
    with torch.no_grad():
        run_blocks(ad, h, layer, intervention=rec if intervention is None else intervention + rec, ctx=batch.query_pos)
    return rec[layer, "mlp_out"][:, 0]


def test_c_direct_mlp_path_is_the_mlp_change_when_only_its_input_changes(make_arch64, arch):
    model, ad, batch = _setup(make_arch64, arch)
    worst = 0.0
    for layer, pos in _sites(ad):
        theta = _theta(ad, layer)
        cap = capture(model, TaskVector.for_model(model, theta[None, None], (layer,), (pos,)), batch)
        h = cap.start
        measured = (_mlp_out(ad, batch, h, layer, pos, PathRestricted(theta, layer, ("mlp",), pos))
                    - _mlp_out(ad, batch, h, layer, pos))
        assert measured.norm() > 0
        worst = max(worst, rel(cap.mlp_direct[:, 0], measured))
    report(arch, "(c) direct MLP path", worst)
    assert worst < TOL, (arch, worst)


def test_d_final_stream_is_clean_plus_theta_plus_sublayer_changes(make_arch64, arch):
    model, ad, batch = _setup(make_arch64, arch)
    worst = 0.0
    for layer, pos in _sites(ad):
        vec = TaskVector.for_model(model, _theta(ad, layer)[None, None], (layer,), (pos,))
        cap = capture(model, vec, batch)
        at_query = (cap.inj_pos == cap.query_pos).to(cap.theta.dtype)[:, None]
        total = cap.final_clean + at_query * cap.theta + cap.attn_delta.sum(1) + cap.mlp_delta.sum(1)
        worst = max(worst, rel(total - cap.final_clean, cap.final_injected - cap.final_clean))
    report(arch, "(d) final-stream sum", worst)
    assert worst < TOL, (arch, worst)


def test_e_every_path_open_is_the_injected_run(make_arch64, arch):
    model, ad, batch = _setup(make_arch64, arch)
    worst = 0.0
    for layer, pos in _sites(ad):
        theta = _theta(ad, layer)
        vec = TaskVector.for_model(model, theta[None, None], (layer,), (pos,))
        with torch.no_grad():
            h = ad.residual(batch.tokens, layer)
            full = ad.unembed(run_blocks(ad, h, layer, intervention=vec, ctx=batch.query_pos))
            restricted = PathRestricted(theta, layer, position=pos)
            paths = ad.unembed(run_blocks(ad, h, layer, intervention=restricted, ctx=batch.query_pos))
            clean = ad.unembed(ad.run_blocks(h, layer))
        rows = torch.arange(len(batch))
        q = batch.query_pos
        assert torch.equal(full[rows, q].argmax(-1), paths[rows, q].argmax(-1))
        worst = max(worst, rel(paths - clean, full - clean))
    report(arch, "(e) all paths = injected", worst)
    assert worst < TOL, (arch, worst)


def test_e_each_path_reaches_only_what_it_names(make_arch64, arch):
    """At the injection block: ``v`` leaves the pattern as it is, ``qk`` leaves the values, ``mlp`` the whole
    attention (pattern and z); each moves what it names."""
    model, ad, batch = _setup(make_arch64, arch)
    layer = 1
    theta = _theta(ad, layer)
    sites = [(layer, "pattern"), (layer, "z"), (layer, "mlp_out")]
    value = f"blocks.{layer}.attn.hook_v"

    def run(paths):
        rec, got = Capture(sites), {}
        iv = rec if paths is None else PathRestricted(theta, layer, paths) + rec
        with torch.no_grad(), ad.hooks([(value, lambda x, hook=None: got.setdefault("v", x.clone()))]):
            run_blocks(ad, ad.residual(batch.tokens, layer), layer, intervention=iv, ctx=batch.query_pos)
        return {**{s[1]: rec[s] for s in sites}, "v": got["v"]}

    clean, v, qk, mlp = run(None), run(("v",)), run(("qk",)), run(("mlp",))
    assert torch.equal(v["pattern"], clean["pattern"]) and not torch.equal(v["v"], clean["v"])
    assert torch.equal(qk["v"], clean["v"]) and not torch.equal(qk["pattern"], clean["pattern"])
    assert torch.equal(mlp["pattern"], clean["pattern"]) and torch.equal(mlp["z"], clean["z"])
    assert not torch.equal(mlp["mlp_out"], clean["mlp_out"])


def test_anatomy_of_each_architecture(make_arch64, arch):
    """What each block has, as the papers and Hugging Face code describe them."""
    ad = tv.adapt(make_arch64(arch))
    a = ad.anatomy(0)
    assert a.parallel == (arch == "gpt_neox")
    assert a.attn_post_norm == a.mlp_post_norm == (arch in ("gemma2", "gemma3", "olmo2"))
    assert a.attn_norm == a.mlp_norm == (arch != "olmo2")
    assert a.out_bias == (arch in ("gpt2", "gpt_neox"))
    assert a.mlp_reads == ("resid_pre" if arch == "gpt_neox" else "resid_mid")
    kinds = {ad.norm(0, n).kind for n in ("ln1", "ln2", "ln1_post", "ln2_post") if ad.norm(0, n) is not None}
    assert kinds == {"gpt2": {"layer"}, "gpt_neox": {"layer"}, "gemma2": {"rms_offset"},
                     "gemma3": {"rms_offset"}}.get(arch, {"rms"})


def test_an_unknown_norm_is_refused_by_name():
    from tvmech.core.anatomy import norm_params

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.eps = torch.nn.Parameter(torch.ones(8)), 1e-6

        def forward(self, x):
            return torch.tanh(x) * self.weight

    with pytest.raises(NotImplementedError, match="Odd"):
        norm_params(Odd())
