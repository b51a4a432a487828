"""A tvmech control vector in llama.cpp itself (llama-cpp-python, ``make test-interop``): the default Q4_1 GGUF in
llama.cpp and tvmech's dequantized float32 model give the same greedy continuation without a vector and with the
exported one, and their last-position log-probabilities agree, with the vector, to the tolerance measured here
between the two runtimes without it (quantized kernels against float32). The null: the same vector written one
block off in llama.cpp misses that tolerance.

The llama.cpp buffer is built here from the GGUF with the ``gguf`` package by llama.cpp's own loader rules
(``common_control_vector_load``: ``direction.{k}`` at offset ``(k - 1) * n_embd``), not with tvmech's reader."""

import ctypes

import gguf
import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.core.weights import default_gguf_path
from tvmech.interventions.control_vectors import apply_to_llama, llama_cpp_buffer
from tvmech.interventions.task_vector import TaskVector

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test-interop installs "
                                "the [interop] extra)")
pytestmark = [pytest.mark.interop, pytest.mark.slow]

PROMPTS = ("The capital of France is", "Once upon a time, there was a")
N_NEW = 12
LAYERS = (8, 16)  # blocks whose outputs are steered (direction.8, direction.16)


@pytest.fixture(scope="module")
def llm():
    return llama_cpp.Llama(model_path=str(default_gguf_path()), n_ctx=256, n_threads=2, n_batch=256, logits_all=True,
                           verbose=False)


@pytest.fixture(scope="module")
def vec(default_model):
    """Seeded directions at blocks 8 and 16, each of norm half the mean residual norm there (enough to change
    the continuation)."""
    ad = tv.adapt(default_model)
    ids = _ids(default_model, PROMPTS[0])
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for layer in LAYERS:
            norm = float(ad.residual(ids, layer + 1)[0].norm(dim=-1).mean())
            d = torch.randn(ad.d_model, generator=gen)
            rows.append(d / d.norm() * 0.5 * norm)
    return TaskVector.for_model(default_model, torch.stack(rows)[:, None], LAYERS, ("all",), point="resid_post")


def _ids(model, prompt):
    return tv.adapt(model).tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]


def _llama(llm, ids, n):
    """Greedy tokens and the prompt's last-position log-probabilities in llama.cpp (its KV cache)."""
    llm.reset()
    llm.eval(ids)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out, torch.log_softmax(torch.from_numpy(first), -1)


def _tvmech(model, prompt, ids, n, vec=None):
    new = tv.generate(model, prompt, n, intervention=vec)[0].new_ids
    with torch.no_grad():
        logits = model.run_with_hooks(ids, fwd_hooks=vec.hooks(model, ids.shape[1] - 1) if vec else [])
    return list(new), torch.log_softmax(logits[0, -1].double(), -1)


def _buffer_by_llama_cpps_rules(path, n_layers, n_embd):
    buf = np.zeros((n_layers - 1) * n_embd, dtype=np.float32)
    for t in gguf.GGUFReader(str(path)).tensors:
        k = int(t.name.split(".")[1])
        buf[(k - 1) * n_embd:k * n_embd] += np.asarray(t.data, dtype=np.float32)
    return buf


def _set(llm, buf):
    fn = getattr(llama_cpp, "llama_set_adapter_cvec", None) or llama_cpp.llama_apply_adapter_cvec
    n_layers = llama_cpp.llama_model_n_layer(llm._model.model)
    ptr = None if buf is None else buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    assert fn(llm._ctx.ctx, ptr, 0 if buf is None else buf.size, llm.n_embd(), 1 if buf is not None else -1,
              n_layers if buf is not None else -1) == 0


def test_llama_cpp_runs_the_exported_vector_as_tvmech_does(default_model, llm, vec, tmp_path):
    path = vec.to_control_vector(tmp_path / "cvec.gguf")
    n_layers = llama_cpp.llama_model_n_layer(llm._model.model)
    buf = _buffer_by_llama_cpps_rules(path, n_layers, llm.n_embd())
    assert np.array_equal(buf, llama_cpp_buffer(path, n_layers))  # tvmech's helper builds the same buffer
    shifted = TaskVector.for_model(default_model, vec.vectors, tuple(x + 1 for x in LAYERS), ("all",),
                                   point="resid_post").to_control_vector(tmp_path / "off_by_one.gguf")
    tol, report = 0.0, []
    for prompt in PROMPTS:
        ids = _ids(default_model, prompt)
        plain_t, lp_t = _tvmech(default_model, prompt, ids, N_NEW)
        _set(llm, None)
        plain_l, lp_l = _llama(llm, ids[0].tolist(), N_NEW)
        steered_t, slp_t = _tvmech(default_model, prompt, ids, N_NEW, vec)
        _set(llm, buf)
        steered_l, slp_l = _llama(llm, ids[0].tolist(), N_NEW)
        _set(llm, _buffer_by_llama_cpps_rules(shifted, n_layers, llm.n_embd()))
        _, off_l = _llama(llm, ids[0].tolist(), 0)
        _set(llm, None)
        d_plain, d_steer, d_off = (float((a - b).abs().max()) for a, b in ((lp_t, lp_l), (slp_t, slp_l),
                                                                          (slp_t, off_l)))
        dec = tv.adapt(default_model).tokenizer.decode
        report.append(f"{prompt!r}: plain {dec(plain_t)!r} (llama.cpp {dec(plain_l)!r}); steered {dec(steered_t)!r} "
                      f"(llama.cpp {dec(steered_l)!r}); max|dlogp| plain {d_plain:.4f} steered {d_steer:.4f} "
                      f"off-by-one {d_off:.4f}")
        print(report[-1])
        assert plain_t == plain_l and steered_t == steered_l
        assert steered_t != plain_t  # the vector changes the continuation
        tol = max(tol, d_plain)
        assert d_steer <= 2 * tol + 0.05, report[-1]  # the measured quantisation tolerance, with margin
        assert d_off > 2 * tol + 0.05, report[-1]  # the null: one block off is outside it


def test_apply_to_llama_equals_the_raw_call(llm, vec, tmp_path, default_model):
    path = vec.to_control_vector(tmp_path / "cvec.gguf")
    ids = _ids(default_model, PROMPTS[0])[0].tolist()
    apply_to_llama(llm, path)
    got, lp_a = _llama(llm, ids, 4)
    _set(llm, _buffer_by_llama_cpps_rules(path, llama_cpp.llama_model_n_layer(llm._model.model), llm.n_embd()))
    want, lp_b = _llama(llm, ids, 4)
    apply_to_llama(llm, None)
    assert got == want and torch.equal(lp_a, lp_b)
