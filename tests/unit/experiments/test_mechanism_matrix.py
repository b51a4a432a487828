"""Invariant (f) of the architecture matrix: every mechanism experiment (OV reconstruction with the
path-restricted runs, key heads, attention sinks, logit lens, linear map) runs on every architecture of
``conftest.ARCHS``, and what each reports agrees with what its forward passes measure (not only "runs and is
finite"). Tiny settings: an LTV of two steps at the middle layer, four test queries."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tvmech.experiments import key_heads, linear_map, logit_lens, ov_reconstruction, sinks
from tvmech.experiments.vectors import VectorStore

TASKS = ("capitalize",)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One LTV store per architecture: every experiment of an architecture analyses the same vector."""
    made: dict[str, VectorStore] = {}
    return lambda arch: made.setdefault(arch, VectorStore(tmp_path_factory.mktemp(f"vectors-{arch}")))


def _mech(module, **kw):
    return module.Config(tasks=TASKS, ltv_steps=2, n_test=4, **kw)


def test_ov_reconstruction_paths_and_sublayer_sums(make_arch, arch, stores):
    store = stores(arch)
    model, _ = make_arch(arch)
    rows = ov_reconstruction.run(model, _mech(ov_reconstruction, alphas=(1.0,)), vectors=store, progress=False).rows()
    acc = {(r["method"], r["scoring"]): r["accuracy"] for r in rows}
    scorings = {s for _, s in acc}
    methods = {m for m, _ in acc}
    assert {"zero_shot", "ltv", "ov_direct", "mlp_direct", "attn_mlp_total_measured", "path_v", "path_all"} <= methods
    for s in scorings:  # every path open is the LTV run itself
        assert acc["path_all", s] == acc["ltv", s], (arch, s)
    assert all(r["n"] == 4 and 0 <= r["accuracy"] <= 1 for r in rows)


def test_key_heads_and_sinks(make_arch, arch, stores):
    store = stores(arch)
    model, _ = make_arch(arch)
    kw = dict(n_score=4, frac=0.25, n_random=1, random_sets=("all_layers",))
    res = key_heads.run(model, _mech(key_heads, **kw), vectors=store, progress=False)
    layer = res.config.layer
    assert all(r["taylor"] == 0 for r in res.scores if r["layer"] < layer)  # heads below θ cannot rely on it
    assert {(r["layer"], r["head"]) for r in res.scores if r["exact"] is not None} == \
        {(r["layer"], r["head"]) for r in res.scores if r["layer"] >= layer}
    sink = sinks.run(model, _mech(sinks, **kw), vectors=store)
    for r in sink.tables()["attention_sinks_heads"]:  # θ at the query: first + self + rest is the whole row
        assert r["first"] + r["self"] + r["rest"] == pytest.approx(1.0, abs=1e-5), (arch, r)
        assert r["self"] == r["injected"]


def test_logit_lens_covers_every_layer(make_arch, arch, stores):
    store = stores(arch)
    model, _ = make_arch(arch)
    res = logit_lens.run(model, logit_lens.Config(tasks=TASKS, ltv_steps=2, n_test=4, k=1), vectors=store)
    layers = defaultdict(set)
    for r in res.rows():
        layers[r["condition"]].add(r["layer"])
    L = model.cfg.n_layers
    assert layers and all(v == set(range(L + 1)) for v in layers.values()), (arch, dict(layers))


def test_linear_map_fits_and_agrees_with_its_jacobian(make_arch, arch, stores):
    store = stores(arch)
    model, _ = make_arch(arch)
    cfg = linear_map.Config(tasks=TASKS, layers=(1,), ltv_steps=2, map_prompts=4, map_heldout=16, map_null=10,
                            n_test=4)
    rows = linear_map.run(model, cfg, vectors=store).rows()
    assert [r["layer"] for r in rows] == [1]
    r = rows[0]
    assert r["r2_train"] > 0.9, (arch, r["r2_train"])  # a small noise ball: the response is nearly linear
    assert r["jac_rel_frobenius"] < 0.5, (arch, r["jac_rel_frobenius"])
