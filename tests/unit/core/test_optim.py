"""GraphAdamW: the default AdamW's trajectory, with no host-side state (so a CUDA graph can replay its step)."""

import pytest
import torch

from tvmech.core.optim import GraphAdamW

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _pair(device: str, max_steps: int = 60):
    """Two copies of the same parameters (two groups: own lr and weight decay), one per optimizer."""
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(576, generator=g) * 3, torch.randn(3, 7, generator=g)]
    a = [p.to(device).clone().requires_grad_() for p in ps]
    b = [p.to(device).clone().requires_grad_() for p in ps]

    def groups(x):
        return [{"params": [x[0]], "lr": 0.05, "weight_decay": 1.7}, {"params": [x[1]], "lr": 1e-3}]

    return a, b, torch.optim.AdamW(groups(a)), GraphAdamW(groups(b), max_steps=max_steps)


def _run(a, b, oa, ob, steps: int, device: str) -> float:
    """Step both on the same gradients (magnitudes 1e-12 .. 10: Adam's ε matters for some); the largest
    parameter difference seen."""
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(steps):
        for x, y in zip(a, b):
            grad = torch.randn(x.shape, generator=g) * torch.logspace(-12, 1, x.numel()).view(x.shape)
            x.grad, y.grad = grad.to(device), grad.to(device).clone()
        oa.step()
        ob.step()
        worst = max(worst, max(float((x - y).detach().abs().max()) for x, y in zip(a, b)))
    return worst


def test_the_trajectory_is_adamw_s_on_the_cpu_to_float_rounding():
    a, b, oa, ob = _pair("cpu")
    start = [x.detach().clone() for x in b]
    # on the CPU PyTorch's kernels round differently (one ulp): the graph path is CUDA-only, so this is a check
    # of the arithmetic, not of the bits
    assert _run(a, b, oa, ob, 60, "cpu") <= 1e-6
    assert all(float((x.detach() - s).abs().max()) > 0.01 for x, s in zip(b, start))  # both groups moved
    assert int(ob.state[b[0]]["step"]) == 60 and ob.state[b[0]]["step"].dtype == torch.long


def test_steps_past_the_tables_reuse_their_last_entry():
    a, b, oa, ob = _pair("cpu", max_steps=20)
    # beyond step 20 the bias corrections stay those of step 20 (1 - 0.9**20 = 0.88, not 1): a small, bounded
    # difference from AdamW, no error
    worst = _run(a, b, oa, ob, 30, "cpu")
    assert 1e-6 < worst < 0.05


def test_parameters_without_gradients_are_left_alone_and_bad_arguments_are_named():
    p, q = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = GraphAdamW([p, q], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(q.detach(), torch.ones(3)) and not torch.equal(p.detach(), torch.ones(3))
    assert q not in opt.state
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"max_steps must be an integer >= 1, got {bad!r}"):
            GraphAdamW([p], max_steps=bad)
    with pytest.raises(ValueError, match="no closure"):
        opt.step(lambda: 0.0)


@CUDA
def test_the_trajectory_is_adamw_s_bit_for_bit_on_cuda():
    a, b, oa, ob = _pair("cuda")  # torch's default on CUDA: the foreach implementation
    assert _run(a, b, oa, ob, 60, "cuda") == 0.0


@CUDA
def test_a_graphed_step_replays_the_eager_trajectory():
    _, b, _, ob = _pair("cuda")
    _, c, _, oc = _pair("cuda")
    grads = [[torch.randn(x.shape, device="cuda") for x in c] for _ in range(12)]
    static = [torch.zeros_like(x) for x in c]
    for x, s in zip(c, static):
        x.grad = s
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        oc.step()  # allocates the state; undone below
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for x, y in zip(c, b):
            x.copy_(y)
        for st in oc.state.values():
            for v in st.values():
                v.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        oc.step()
    for step in grads:
        for s, gr in zip(static, step):
            s.copy_(gr)
        graph.replay()
        for y, gr in zip(b, step):
            y.grad = gr.clone()
        ob.step()
    torch.cuda.synchronize()
    for x, y in zip(c, b):
        assert torch.equal(x.detach(), y.detach())
