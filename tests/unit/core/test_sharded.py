"""Models loaded through accelerate's big-model loading (``load_model(..., device_map=...)``), split across
layers on the CPU with disk offload, and (with CUDA) across ``cuda:0`` and CPU offload: every algorithm gives
the single-device numbers."""

import pytest
import torch

import tvmech as tv
from tvmech.methods.learned import LTVConfig, learn_task_vector, ltv_objective
from tvmech.methods.training import prepare_data

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, make_tiny_hf, make_tokenizer):
    root = tmp_path_factory.mktemp("sharded")
    tok = make_tokenizer()
    make_tiny_hf(vocab=len(tok)).save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    single = tv.load_model(root / "tiny")
    split = tv.load_model(root / "tiny", device_map=SPLIT, offload_folder=root / "offload")
    return single, split


def test_split_model_is_dispatched_and_offloaded(pair):
    _, split = pair
    hf = tv.adapt(split).model.original_model
    assert hf.hf_device_map["model.layers.1"] == "disk"
    assert any(p.device.type == "meta" for p in hf.model.layers[1].parameters())  # weights stay on disk
    assert tv.adapt(split).device.type == "cpu"
    assert tv.adapt(split).offloaded and not tv.adapt(pair[0]).offloaded
    ad = tv.adapt(split)
    data = prepare_data(ad, SMALL, SMALL.examples[:4], 0)
    assert not ltv_objective(ad, data, [(1,)], (-1,))[0].row_loss.graphable(data)  # never captured in a CUDA graph


def assert_same_numbers(single, split) -> None:
    """LTV, evaluation, Taylor scores and the W_TV fit of ``split`` equal those of ``single``."""
    cfg = LTVConfig(steps=5, batch_size=8, eval_every=2, lr=3e-2)
    a = learn_task_vector(single, SMALL, layers=(1,), config=cfg, progress=False)
    b = learn_task_vector(split, SMALL, layers=(1,), config=cfg, progress=False)
    assert a.vectors.abs().sum() > 0
    torch.testing.assert_close(b.vectors, a.vectors, atol=1e-5, rtol=1e-5)
    sp = SMALL.splits(0)
    ea = tv.evaluate(single, SMALL, sp.test[:8], 2, sp.train, intervention=a)
    eb = tv.evaluate(split, SMALL, sp.test[:8], 2, sp.train, intervention=a)
    assert (ea.correct, ea.predictions) == (eb.correct, eb.predictions)
    prompts = tv.make_prompts(SMALL, sp.test[:4], 0)
    ta = tv.taylor_scores(single, a, SMALL, prompts)
    tb = tv.taylor_scores(split, a, SMALL, prompts)
    torch.testing.assert_close(tb.taylor, ta.taylor, atol=1e-5, rtol=1e-4)
    batch = tv.analysis.tv_map.fit_prompts(single, SMALL, sp.test[:2])
    mc = tv.MapConfig(n_samples=150, n_heldout=8)
    wa = tv.fit_tv_map(single, batch, a.vectors.reshape(-1), 1, mc)
    wb = tv.fit_tv_map(split, batch, a.vectors.reshape(-1), 1, mc)
    torch.testing.assert_close(wb.W, wa.W, atol=1e-4, rtol=1e-4)


def test_split_model_gives_the_single_device_numbers(pair):
    assert_same_numbers(*pair)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_split_across_cuda_and_cpu_offload_gives_the_single_gpu_numbers(tmp_path, make_tiny_hf, make_tokenizer):
    tok = make_tokenizer()
    make_tiny_hf(vocab=len(tok)).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    single = tv.load_model(tmp_path / "tiny", device="cuda")
    mixed = {**{k: 0 for k in SPLIT}, "model.layers.1": "cpu", "model.layers.2": "cpu"}
    split = tv.load_model(tmp_path / "tiny", device_map=mixed)
    hf = tv.adapt(split).model.original_model
    assert hf.hf_device_map["model.layers.1"] == "cpu" and hf.hf_device_map["model.layers.0"] == 0
    assert tv.adapt(split).device == torch.device("cuda", 0)
    assert all(p.device.type != "cuda" for p in hf.model.layers[1].parameters())  # offloaded: on the GPU per call
    with tv.fast_path(True, cuda_graphs=False):  # offloaded weights are never graph-captured: compare like for like
        assert_same_numbers(single, split)


def test_a_model_larger_than_max_memory_is_refused_naming_its_size(tmp_path, make_tiny_hf, make_tokenizer):
    tok = make_tokenizer()
    make_tiny_hf(vocab=len(tok)).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match=r"needs 0\.00 GiB .* max_memory \{'cpu': 1000\} allows"):
        tv.load_model(tmp_path / "tiny", device_map="auto", max_memory={"cpu": 1000})
    with pytest.raises(ValueError, match="need a device_map"):
        tv.load_model(tmp_path / "tiny", max_memory={"cpu": "1GiB"})


def test_split_model_on_the_hooked_path_and_its_fingerprint(pair):
    single, split = pair
    tokens = torch.randint(2, 90, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), tv.fast_path(False):
        torch.testing.assert_close(tv.adapt(split).residual(tokens, 3), tv.adapt(single).residual(tokens, 3))
    assert tv.adapt(split).fingerprint() == tv.adapt(single).fingerprint()  # a vector moves between the two
