"""PCA task vectors: the sign follows the mean difference, rank-1 differences give the normalised mean
direction, pca_center is the uncentred PCA of the differences, and the states read match the vanilla TV."""

import pytest
import torch

import tvmech as tv
from tvmech.methods.pca_vectors import difference_vector, extracted_vector, first_component
from tvmech.methods.vanilla import query_states_at, vanilla_task_vector

TASK = tv.builtin_task("capitalize")


def _pairs(d: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    zs = torch.randn(d.shape, generator=torch.Generator().manual_seed(seed))
    return zs + d, zs


@pytest.mark.parametrize("kind", ["pca_diff", "pca_center"])
def test_rank1_differences_give_the_normalised_mean_direction(kind):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    c = torch.linspace(0.5, 3.0, 12)  # positive, not all equal (centred PCA needs spread)
    icl, zs = _pairs(c[:, None] * v)
    out = difference_vector(icl, zs, kind)
    mean = (icl - zs).mean(0)
    assert torch.allclose(out / out.norm(), mean / mean.norm(), atol=1e-5)
    assert out.norm() == pytest.approx(float(mean.norm()), rel=1e-5)


@pytest.mark.parametrize("kind", ["pca_diff", "pca_center"])
def test_sign_is_aligned_with_the_mean_difference(kind):
    g = torch.Generator().manual_seed(2)
    for seed in range(5):  # whatever sign the SVD returns, the vector points along the mean difference
        d = torch.randn(20, 16, generator=g) + torch.randn(16, generator=g) * 3
        icl, zs = _pairs(d, seed)
        out = difference_vector(icl, zs, kind)
        assert float(out @ d.mean(0)) >= 0
        assert float(difference_vector(zs, icl, kind) @ d.mean(0)) <= 0  # swapping the pairs flips it


def test_pca_center_is_the_uncentred_pca_of_the_differences():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(15, 8, generator=g) + 2 * torch.randn(8, generator=g)
    icl, zs = _pairs(d)
    u = first_component(d, center=False)
    out = difference_vector(icl, zs, "pca_center")
    assert abs(float(out @ u)) / float(out.norm()) == pytest.approx(1.0, abs=1e-5)
    # and pca_diff differs from it: centring removes the shared shift
    assert abs(float(difference_vector(icl, zs, "pca_diff") @ u)) / float(out.norm()) < 0.999


def test_degenerate_differences_are_refused():
    icl, zs = _pairs(torch.ones(6, 4))  # every difference equal: nothing left after centring
    with pytest.raises(ValueError, match="no principal direction"):
        difference_vector(icl, zs, "pca_diff")
    same = torch.randn(6, 4)  # no difference at all (block 0): the zero vector, whatever the method
    assert all(not difference_vector(same, same, k).any() for k in ("mean_diff", "pca_diff", "pca_center"))
    with pytest.raises(ValueError, match="kind 'pca' is not valid"):
        difference_vector(icl, zs, "pca")


def test_mean_diff_equals_the_vanilla_task_vector(tiny):
    small = tv.Task("capitalize", TASK.examples[:30], TASK.template)
    van = vanilla_task_vector(tiny, small, 1, k=2, n=6, seed=0)
    ext = extracted_vector(tiny, small, 1, "mean_diff", k=2, n=6, seed=0)
    assert torch.allclose(van.vectors, ext.vectors, atol=1e-5)
    pca = extracted_vector(tiny, small, 1, "pca_diff", k=2, n=6, seed=0)
    assert pca.method == "pca_diff" and pca.vectors.norm() == pytest.approx(float(van.vectors.norm()), rel=1e-4)


def test_query_states_read_every_layer_in_one_pass(tiny):
    prompts = tv.make_prompts(TASK, TASK.examples[:5], 1, TASK.examples[5:20])
    both = query_states_at(tiny, TASK, prompts, (0, 2), batch_size=2)
    ad = tv.adapt(tiny)
    for j, layer in enumerate((0, 2)):
        b = tv.encode(ad.tokenizer, TASK, prompts[:1])
        ref = ad.residual(b.tokens, layer)[0, b.query_pos[0]]
        assert torch.allclose(both[0, j], ref.float(), atol=1e-5)
