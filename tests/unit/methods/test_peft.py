import pytest
import torch

import tvmech as tv
from tvmech.experiments.layer_sweep import headline_scorings
from tvmech.experiments.peft import compare_peft
from tvmech.interventions.lowrank import LowRankAttnOut
from tvmech.methods.learned import LTVConfig, learn_task_vector
from tvmech.methods.lora import lora_delta
from tvmech.methods.peft_training import METHODS, SavedTensorBytes, train_peft
from tvmech.methods.prompt_tuning import evaluate_prefix, prefix_init_token, prefix_query_logits, shift_batch

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
LRS = {"ltv": 1e-2, "prefix": 1e-1, "lora_rank1": 1e-2}
KEYS = {"method", "task", "layer", "scoring", "accuracy", "zero_shot_accuracy", "acc_by_scoring",
        "zero_shot_by_scoring", "n_test", "trainable_params", "lr",
        "train_loss_start", "train_loss_end", "val_loss_end", "step_latency_s", "step_latency_min_s",
        "peak_memory_bytes", "cuda_peak_bytes", "steps", "batch_size", "device"}


def _batch(model, n=5):
    return tv.encode(model.tokenizer, SMALL, tv.make_prompts(SMALL, SMALL.examples[:n], 0))


def _set_pos0(v):
    def hook(x, hook=None):
        x = x.clone()
        x[:, 0] = v.to(x.dtype)
        return x

    return hook


@pytest.mark.parametrize("zero", [True, False])
def test_prefix_equals_an_extra_first_token_with_that_embedding(tiny, zero):
    ad = tv.adapt(tiny)
    batch = _batch(tiny)
    v = torch.zeros(ad.d_model) if zero else torch.randn(ad.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = prefix_query_logits(tiny, batch, v)
        # manual: a real extra token in front whose block-0 residual is overwritten with v
        tokens = torch.cat([torch.full((len(batch), 1), 7), batch.tokens], 1)
        with ad.hooks([(ad.hook_name(0), _set_pos0(v))]):
            final = ad.residual(tokens, ad.n_layers)
        rows = torch.arange(len(batch))
        want = ad.unembed(final[rows, batch.query_pos + 1])
        unshifted = ad.unembed(final[rows, batch.query_pos])
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, unshifted, atol=1e-2)  # reading the old query position would be caught


def test_prefix_training_loss_targets_the_shifted_labels(tiny):
    ad = tv.adapt(tiny)
    train = SMALL.splits(0).train
    run = train_peft(tiny, SMALL, "prefix", layer=1, steps=1, batch_size=8, val=())
    # the virtual token starts as the embedding of prefix_init_token: the same as a real first token
    batch = tv.encode(tiny.tokenizer, SMALL, tv.make_prompts(SMALL, train, 0), with_labels=True)
    tokens = torch.cat([torch.full((len(batch), 1), prefix_init_token(tiny)), batch.tokens], 1)
    with torch.no_grad():
        logits = ad.unembed(ad.residual(tokens, ad.n_layers)[:, 1:])  # real tokens' logits
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
    manual = (nll.sum(1) / batch.label_mask.sum(1)).mean()
    assert run["train_loss_start"] == pytest.approx(float(manual), abs=1e-4)


def test_shift_batch_moves_query_and_targets(tiny):
    batch = tv.encode(tiny.tokenizer, SMALL, tv.make_prompts(SMALL, SMALL.examples[:3], 0), with_labels=True)
    s = shift_batch(batch)
    assert s.tokens.shape[1] == batch.tokens.shape[1] + 1 and torch.equal(s.query_pos, batch.query_pos + 1)
    assert torch.equal(s.label_mask.nonzero()[:, 1], batch.label_mask.nonzero()[:, 1] + 1)
    assert torch.equal(s.targets[:, 1:], batch.targets) and (s.targets[:, 0] == -100).all()


def test_evaluate_prefix_matches_a_prepended_character(tiny):
    test = SMALL.splits(0).test
    v = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 3
    hashed = SMALL.with_template(instruction="#")  # one extra character = one extra token
    want = tv.evaluate(tiny, hashed, test, intervention=tv.Injection.single(v, 0, position=0, mode="replace"))
    got = evaluate_prefix(tiny, SMALL, test, v)
    plain = tv.evaluate(tiny, SMALL, test)
    assert got.predictions == want.predictions and got.accuracy == want.accuracy
    assert got.predictions != plain.predictions


def test_lora_with_b_zero_changes_nothing(tiny):
    ad = tv.adapt(tiny)
    batch = _batch(tiny)
    a = torch.randn(ad.n_heads * ad.d_head)
    with torch.no_grad():
        base = ad.residual(batch.tokens, ad.n_layers)
        with LowRankAttnOut(1, a, torch.zeros(ad.d_model)).apply(tiny):
            same = ad.residual(batch.tokens, ad.n_layers)
    assert torch.equal(base, same)


def test_lora_delta_is_a_rank1_change_of_W_O(tiny):
    ad = tv.adapt(tiny)
    batch = _batch(tiny)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(ad.n_heads * ad.d_head, generator=g), torch.randn(ad.d_model, generator=g)
    got = {}

    def grab(name):
        def hook(x, hook=None):
            got[name] = x.detach().clone()

        return hook

    names = [ad.act_name(1, "z"), ad.act_name(1, "attn_out"), ad.act_name(1, "resid_mid")]
    with torch.no_grad():
        with ad.hooks([(n, grab(n)) for n in names]):
            ad.residual(batch.tokens, 2)
        z, attn_out, mid = (got[n] for n in names)
        with ad.hooks(LowRankAttnOut(1, a, b).hooks(tiny) + [(names[2], grab("lora_mid"))]):
            ad.residual(batch.tokens, 2)
    W = ad.W_O[1].reshape(ad.n_heads * ad.d_head, ad.d_model)
    assert torch.allclose(z.flatten(2) @ W, attn_out, atol=1e-4)  # z really is the input of W_O
    manual = z.flatten(2) @ (W + torch.outer(a, b)) - attn_out
    assert torch.allclose(got["lora_mid"] - mid, manual, atol=1e-3)
    assert torch.allclose(lora_delta(z, a, b), manual, atol=1e-3)
    assert manual.abs().max() > 1e-2


def test_saved_tensor_bytes_counts_each_storage_once():
    x = torch.randn(10, 10, requires_grad=True)
    with SavedTensorBytes() as s:
        (x * x).exp().sum()  # mul saves x twice (one storage), exp saves its result
    assert s.bytes == 2 * 400
    with SavedTensorBytes(exclude=[x]) as s:
        (x * x).exp().sum()
    assert s.bytes == 400


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss(tiny, method):
    run = train_peft(tiny, SMALL, method, layer=1, steps=15, batch_size=8, lr=LRS[method])
    assert run["train_loss_end"] < run["train_loss_start"] - 0.05, run["curve"]
    assert len(run["curve"]) == 15 and len(run["step_times_s"]) == 15


def test_ltv_here_is_learn_task_vector(tiny):
    run = train_peft(tiny, SMALL, "ltv", layer=1, steps=6, batch_size=8, lr=1e-2, val=())
    vec = learn_task_vector(tiny, SMALL, val=(), layers=(1,), config=LTVConfig(steps=6, batch_size=8, lr=1e-2),
                            progress=False)
    # learn.py trains θ = norm · φ, this module θ itself: the same Adam steps up to Adam's eps term
    assert torch.allclose(run["params"]["vector"], vec.vectors, atol=1e-3, rtol=1e-4)
    assert run["lr"] == pytest.approx(vec.metrics["lr_effective"])


def test_compare_peft_records_and_exact_parameter_counts(tiny):
    rows = compare_peft(tiny, SMALL, layer=1, steps=3, batch_size=8, lrs=LRS)
    assert [r["method"] for r in rows] == ["ltv", "prefix", "lora_rank1"]
    assert all(set(r) == KEYS for r in rows)
    by = {r["method"]: r for r in rows}
    assert by["ltv"]["trainable_params"] == 64 and by["prefix"]["trainable_params"] == 64
    assert by["lora_rank1"]["trainable_params"] == 4 * 16 + 64
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0 < r["step_latency_min_s"] <= r["step_latency_s"]
        assert r["cuda_peak_bytes"] is None
        assert r["peak_memory_bytes"] > 0 and r["n_test"] == len(SMALL.splits(0).test)
    # prefix tuning backpropagates through all 3 blocks, LTV and LoRA through blocks 1-2 only
    assert by["prefix"]["peak_memory_bytes"] > by["ltv"]["peak_memory_bytes"]
    # the headline scoring: full vocabulary first, then the task's own where it differs (here the same)
    assert all(r["scoring"] == "first_token" and r["acc_by_scoring"] == {"first_token": r["accuracy"]}
               and r["zero_shot_by_scoring"] == {"first_token": r["zero_shot_accuracy"]} for r in rows)
    assert headline_scorings(tv.builtin_task("sentiment")) == ("first_token", "label_set")
    assert headline_scorings(tv.builtin_task("sentiment"), ("label_set",)) == ("label_set",)
    two = compare_peft(tiny, SMALL, layer=1, steps=2, batch_size=8, lrs=LRS, methods=["ltv", "prefix"],
                       scorings=("exact_match", "first_token"))
    for r in two:
        assert r["scoring"] == "exact_match" and list(r["acc_by_scoring"]) == ["exact_match", "first_token"]
        assert r["accuracy"] == r["acc_by_scoring"]["exact_match"]
        assert r["acc_by_scoring"]["exact_match"] <= r["acc_by_scoring"]["first_token"]  # the whole label, or more


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        compare_peft(tiny, SMALL, layer=9, steps=2)
    with pytest.raises(ValueError, match="steps and batch_size must be integers >= 1"):
        train_peft(tiny, SMALL, "ltv", layer=1, steps=0)
    with pytest.raises(ValueError, match="steps and batch_size must be integers >= 1"):
        compare_peft(tiny, SMALL, layer=1, steps=0)
    with pytest.raises(ValueError, match="method\\(s\\) \\['adapter'\\] not known"):
        train_peft(tiny, SMALL, "adapter", layer=1)
    with pytest.raises(ValueError, match="method\\(s\\) \\['bogus'\\] not known"):
        compare_peft(tiny, SMALL, layer=1, methods=["bogus"])
    with pytest.raises(ValueError, match="prefix must be"):
        prefix_query_logits(tiny, _batch(tiny), torch.zeros(32))
    with pytest.raises(ValueError, match="LoRA factors must have shapes"):
        LowRankAttnOut(1, torch.zeros(64), torch.zeros(63)).writes(tiny)


def test_peft_figure_draws_every_method():
    from tvmech.plots.peft_plots import peft_figure

    rows = [{"method": m, "accuracy": 0.5 + i / 10, "trainable_params": 576 * (1 + (i == 2)),
             "step_latency_s": 0.1 * (i + 1), "peak_memory_bytes": 2**20 * (i + 1), "cuda_peak_bytes": None,
             "zero_shot_accuracy": 0.4, "task": "t", "layer": 15} for i, m in enumerate(METHODS)]
    fig = peft_figure(rows)
    assert len(fig.data) == 4 and all(list(t.x) == list(METHODS) for t in fig.data)
    assert list(fig.data[0].y) == [0.5, 0.6, 0.7]
