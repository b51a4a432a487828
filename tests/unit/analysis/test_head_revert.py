"""Reverting heads to their clean (no-θ) output: the exact intervention the TV-reliance score estimates (issue 24).

On every architecture of the matrix: the revert patch writes each prompt's own clean ``z`` back exactly; reverting
every head at or above the injection layer, with θ at a position other than the query, gives the clean run back
(θ then reaches the query only through those heads); and the first-order TV-reliance estimate of one head's revert
tends to its exact effect as θ → 0.
"""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.head_attribution import (
    ESTIMATES,
    ablation,
    ablation_effects,
    clean_query_z,
    prompt_batch,
    taylor_scores,
)
from tvmech.data.prompts import make_prompts
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.task_vector import TaskVector

TASK = tv.builtin_task("capitalize")
PROMPTS = make_prompts(TASK, TASK.examples[:4], 0)


def _vec(model, layer: int, position: int, scale: float, seed: int = 0) -> TaskVector:
    """θ of norm ``scale`` times the model's mean residual norm at ``layer``, at one site."""
    ad = tv.adapt(model)
    batch = prompt_batch(ad, TASK, PROMPTS)
    with torch.no_grad():
        norm = ad.residual(batch.tokens, layer)[torch.arange(len(batch)), batch.query_pos].norm(dim=-1).mean()
    u = torch.randn(ad.d_model, generator=torch.Generator().manual_seed(seed))
    return TaskVector.for_model(model, (scale * float(norm) * u / u.norm()).view(1, 1, -1), (layer,), (position,))


def _final(ad, batch, hooks):
    """The final residual at each prompt's query."""
    with torch.no_grad(), ad.hooks(hooks):
        h = ad.residual(batch.tokens, ad.n_layers)
    return h[torch.arange(len(batch)), batch.query_pos]


def test_revert_patch_writes_each_prompts_clean_z_exactly(make_arch, arch):
    bridge, _ = make_arch(arch)
    ad = tv.adapt(bridge)
    vec = _vec(bridge, 1, -1, 1.0)
    batch = prompt_batch(ad, TASK, PROMPTS)
    clean = clean_query_z(ad, TASK, PROMPTS)
    assert clean.shape == (ad.n_layers, len(PROMPTS), ad.n_heads, ad.d_head)
    layer, heads = ad.n_layers - 1, [0, 2]
    seen = Capture([(layer, "z")], positions=(-1,))
    with torch.no_grad():
        residual(ad, batch.tokens, ad.n_layers, intervention=vec + seen, ctx=batch.query_pos)
    theta_z = seen[layer, "z"][:, 0]
    assert not torch.allclose(theta_z, clean[layer])  # θ changed them: the revert has something to undo
    after = Capture([(layer, "z")], positions=(-1,))
    patch = ablation(ad, [(layer, h) for h in heads], kind="revert", clean=clean)
    with torch.no_grad():
        residual(ad, batch.tokens, ad.n_layers, intervention=vec + patch + after, ctx=batch.query_pos)
    got = after[layer, "z"][:, 0]
    assert torch.equal(got[:, heads], clean[layer][:, heads].to(got.dtype))
    others = [h for h in range(ad.n_heads) if h not in heads]
    assert torch.equal(got[:, others], theta_z[:, others])


def test_reverting_every_head_reached_by_theta_gives_the_clean_run(make_arch, arch):
    """θ at a position before the query reaches the query only through attention: with every head of the blocks
    at or above θ's layer reverted at the query, the query's residual stream is the clean one to the end."""
    bridge, _ = make_arch(arch)
    ad = tv.adapt(bridge)
    layer = 1
    vec = _vec(bridge, layer, -3, 2.0)
    batch = prompt_batch(ad, TASK, PROMPTS)
    clean = clean_query_z(ad, TASK, PROMPTS)
    base = _final(ad, batch, [])
    theta = _final(ad, batch, vec.hooks(bridge, batch.query_pos))
    assert (theta - base).norm() > 1e-2 * base.norm()  # θ does reach the query
    every = [(l, h) for l in range(layer, ad.n_layers) for h in range(ad.n_heads)]
    reverted = _final(ad, batch, (vec + ablation(ad, every, kind="revert", clean=clean)).hooks(ad, batch.query_pos))
    assert torch.allclose(reverted, base, rtol=1e-5, atol=1e-5 * float(base.abs().max()))
    # one head left out: θ gets through it
    part = _final(ad, batch, (vec + ablation(ad, every[1:], kind="revert", clean=clean)).hooks(ad, batch.query_pos))
    assert (part - base).norm() > 1e-4 * base.norm()


def test_first_order_estimate_of_one_head_revert_tends_to_the_exact_effect(make_arch, arch):
    """Per prompt, (z_θ − z_clean)·∂p/∂z / Δp_revert → 1 as θ → 0 (error of second order: ~ linear in |θ|)."""
    bridge, _ = make_arch(arch)
    ad = tv.adapt(bridge)
    one = PROMPTS[:1]
    heads = [(l, h) for l in (1, 2) for h in range(ad.n_heads)]
    pick = taylor_scores(bridge, _vec(bridge, 1, -1, 1e-2), TASK, one)
    head = max(heads, key=lambda lh: float(pick.signed[lh].abs()))
    errors = []
    for scale in (1e-1, 1e-2, 1e-3):
        vec = _vec(bridge, 1, -1, scale)
        est = float(taylor_scores(bridge, vec, TASK, one).signed[head])
        exact = float(ablation_effects(bridge, vec, TASK, one, [head], kind="revert")[0, 0])
        assert exact != 0
        errors.append(abs(est / exact - 1))
    assert errors[-1] < 0.02, (head, errors)
    assert errors[-1] < errors[0], (head, errors)


def test_revert_of_heads_below_the_injection_layer_is_exactly_zero(tiny):
    vec = _vec(tiny, 2, -1, 1.0)
    below = [(l, h) for l in (0, 1) for h in range(4)]
    assert torch.equal(ablation_effects(tiny, vec, TASK, PROMPTS, below, kind="revert"), torch.zeros(8, 4))
    above = ablation_effects(tiny, vec, TASK, PROMPTS, [(2, h) for h in range(4)], kind="revert")
    assert above.abs().max() > 0
    assert ESTIMATES == {"tv_reliance": "revert", "paper": "zero"}


def test_batched_revert_matches_one_head_at_a_time(tiny):
    ad, vec = tv.adapt(tiny), _vec(tiny, 1, -1, 1.0)
    heads = [(1, 0), (1, 3), (2, 2)]
    clean = clean_query_z(ad, TASK, PROMPTS)
    got = ablation_effects(tiny, vec, TASK, PROMPTS, heads, kind="revert", clean=clean)
    batch = prompt_batch(ad, TASK, PROMPTS)
    rows = torch.arange(len(batch))
    for i, head in enumerate(heads):
        with torch.no_grad():
            logits = [ad.unembed(_final(ad, batch, vec.hooks(tiny, batch.query_pos) + extra))
                      for extra in ([], ablation(ad, [head], kind="revert", clean=clean).hooks(ad, batch.query_pos))]
        p, pa = (torch.softmax(x.float(), -1)[rows, batch.label_first] for x in logits)
        assert torch.allclose(got[i], p - pa, atol=1e-6), head


def test_per_row_values_and_their_errors(tiny):
    ad = tv.adapt(tiny)
    batch = prompt_batch(ad, TASK, PROMPTS)
    B = len(batch)
    values = torch.randn(B, ad.n_heads, ad.d_head)
    seen = Capture([(1, "z")], positions=(-1,))
    patch = HeadPatch(1, torch.arange(B) % ad.n_heads, values, per_row=True)  # row b: head b % n_heads
    with torch.no_grad():
        residual(ad, batch.tokens, 2, intervention=patch + seen, ctx=batch.query_pos)
    z = seen[1, "z"][:, 0]
    for b in range(B):
        assert torch.equal(z[b, b % ad.n_heads], values[b, b % ad.n_heads])
    with pytest.raises(ValueError, match=r"head values must have shape \(4, 16\).*\(rows, 4, 16\)"):
        HeadPatch(1, [0], torch.zeros(2, 4, 8)).writes(ad)
    with pytest.raises(ValueError, match="per-row head values have 3 rows; the patch covers 4"):
        with torch.no_grad():
            residual(ad, batch.tokens, 2, intervention=HeadPatch(1, [0], torch.zeros(3, 4, 16)), ctx=batch.query_pos)
    with pytest.raises(ValueError, match=r"revert needs clean z of shape \(3, batch, 4, 16\)"):
        ablation(ad, [(1, 0)], kind="revert")
    with pytest.raises(ValueError, match="kind 'half' is not valid"):
        ablation(ad, [(1, 0)], kind="half")
