"""The weight digest behind saved vectors' fingerprints (issue 29): exact integer sketches computed where the
weights are, that accept the same weights under any name and refuse other weights, cached while unchanged."""

import copy

import pytest
import torch

import tvmech.core.fingerprint as fp
from tvmech.core.adapter import FINGERPRINT_PREFIX, WEIGHTS_HASH_ATTR, adapt
from tvmech.core.models import wrap
from tvmech.interventions.task_vector import TaskVector


def test_the_int8_product_is_exact_on_both_paths():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (40, fp.K), generator=g, dtype=torch.int8)
    R = fp.sketch_matrix(0, torch.device("cpu"))
    exact = x.long() @ R.long()
    assert torch.equal(fp.exact_rows_times(x, R).long(), exact)  # torch._int_mm
    assert torch.equal(fp.exact_rows_times(x[:9], R).long(), exact[:9])  # float64 (too few rows for _int_mm)


def test_the_sketch_follows_values_not_chunks_or_storage_dtype(monkeypatch):
    t = torch.randn(3000, 7, generator=torch.Generator().manual_seed(1)).bfloat16()
    whole = fp.tensor_sketch(t)
    assert fp.tensor_sketch(t.float()) == whole  # the exact float32 copy of a bfloat16 tensor matches
    assert fp.tensor_sketch(t.t().contiguous().t()) == whole  # the layout in memory does not matter
    monkeypatch.setattr(fp, "CHUNK", fp.K * 2)  # many chunks of float32 bytes: the same rows, the same digest
    assert fp.tensor_sketch(t) == whole


def test_the_sketch_sees_one_ulp_and_a_swap():
    t = torch.randn(5000, 33, generator=torch.Generator().manual_seed(2))
    base = fp.tensor_sketch(t)
    ulp = t.clone()
    ulp[1234, 5] = torch.nextafter(ulp[1234, 5], torch.tensor(float("inf")))
    swap = t.clone()
    swap[[0, 4999]] = swap[[4999, 0]]
    sign = t.clone()
    sign[7, 7] = -sign[7, 7]
    assert len({base, fp.tensor_sketch(ulp), fp.tensor_sketch(swap), fp.tensor_sketch(sign)}) == 4


def test_same_weights_under_another_name_match_other_weights_do_not(make_tiny_hf, make_tokenizer, tiny):
    tok = make_tokenizer()
    same = wrap(make_tiny_hf(vocab=len(tok)), tok, "another/path/name")
    other = wrap(make_tiny_hf(vocab=len(tok), seed=1), tok, "tiny-llama")
    mine = adapt(tiny).fingerprint()
    assert mine.startswith(FINGERPRINT_PREFIX) and len(mine) == len(FINGERPRINT_PREFIX) + 16
    assert adapt(same).fingerprint() == mine != adapt(other).fingerprint()


def test_an_in_place_change_is_seen_and_the_digest_is_cached_otherwise(make_tiny_hf, make_tokenizer, monkeypatch):
    tok = make_tokenizer()
    model = wrap(make_tiny_hf(vocab=len(tok)), tok, "tiny")
    ad = adapt(model)
    before = ad.fingerprint()
    calls = []
    real = fp.weights_digest
    monkeypatch.setattr("tvmech.core.adapter.weights_digest", lambda m: calls.append(1) or real(m))
    assert ad.fingerprint() == before and not calls  # cached for the process
    with torch.no_grad():
        w = model.original_model.model.layers[1].mlp.down_proj.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))
    assert ad.fingerprint() != before and calls == [1]  # one ulp of one weight, changed in place


def test_vectors_saved_with_the_legacy_fingerprint_still_load(tiny, make_tiny_hf, make_tokenizer, tmp_path):
    legacy = adapt(tiny).legacy_fingerprint()
    assert len(legacy) == 16 and not legacy.startswith(FINGERPRINT_PREFIX)
    vec = TaskVector(torch.randn(1, 1, 64), (1,), fingerprint=legacy, d_model=64, model_name="tiny-llama")
    vec.save(tmp_path / "old")
    TaskVector.load(tmp_path / "old", tiny)  # accepted: the legacy hash is computed, only for such a vector
    tok = make_tokenizer()
    other = wrap(make_tiny_hf(vocab=len(tok), seed=1), tok, "tiny-llama")
    with pytest.raises(ValueError, match="other weights or another architecture"):
        TaskVector.load(tmp_path / "old", other)


def test_a_loader_file_digest_stands_for_the_weights_until_they_change(make_tiny_hf, make_tokenizer):
    tok = make_tokenizer()
    hf = make_tiny_hf(vocab=len(tok))
    setattr(hf, WEIGHTS_HASH_ATTR, "gguf:" + "ab" * 32)
    ad = adapt(wrap(hf, tok, "from-a-file"))
    assert ad.weights_digest() == "gguf:" + "ab" * 32
    with torch.no_grad():
        hf.lm_head.weight.mul_(2)
    assert ad.weights_digest().startswith("sketch1:")  # no longer the file's weights


def test_a_deep_copy_has_the_same_digest(make_tiny_hf):
    hf = make_tiny_hf()
    assert fp.weights_digest(hf) == fp.weights_digest(copy.deepcopy(hf))


def test_the_digest_is_the_same_inside_native_where_the_bridge_components_are_taken_out(make_tiny_hf,
                                                                                         make_tokenizer):
    tok = make_tokenizer()
    outside = adapt(wrap(make_tiny_hf(vocab=len(tok)), tok, "a")).fingerprint()
    fresh = adapt(wrap(make_tiny_hf(vocab=len(tok)), tok, "b"))
    with fresh.native():  # first computed here (as when generate is the first call with a loaded vector)
        inside = fresh.fingerprint()
    assert inside == outside == fresh.fingerprint()
