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

PROMPTS = ("Once upon a time, there was a", "My day was")
POSITIVE, NEGATIVE = "I love it. Wonderful, happy, great joy!", "I hate it. Terrible, sad, awful misery!"
N_NEW = 12
LAYERS = (8, 16)
SCALE = 0.25  # blocks whose outputs are steered (direction.8, direction.16)


@pytest.fixture(scope="module")
def llm():
    """The default GGUF in llama.cpp, without weight repacking (``llama-cli --no-repack``): a wheel built with
    ``-march=native`` on a CPU with AMX otherwise multiplies in AMX tiles, which crash (SIGSEGV) where the kernel
    does not grant them (containers; seen here). Q4_1 has no other repacked layout on x86: the same kernels."""
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llama_cpp.llama_cpp, "llama_model_default_params", params)
        return llama_cpp.Llama(model_path=str(default_gguf_path()), n_ctx=256, n_threads=2, n_batch=256,
                               logits_all=True, verbose=False)


@pytest.fixture(scope="module")
def vec(default_model):
    """A sentiment vector as repeng makes them: at blocks 8 and 16, the mean block output over a positive text minus
    over a negative one (it turns continuations cheerful; twice it already derails them)."""
    ad = tv.adapt(default_model)
    with torch.no_grad():
        rows = [ad.residual(_ids(default_model, POSITIVE), k + 1)[0].mean(0)
                - ad.residual(_ids(default_model, NEGATIVE), k + 1)[0].mean(0) for k in LAYERS]
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
    """tvmech's greedy tokens, and its log-probabilities at the prompt's last position and after each new token."""
    new = list(tv.generate(model, prompt, n, intervention=vec)[0].new_ids)
    full = torch.cat([ids, torch.tensor([new])], 1)
    with torch.no_grad():
        logits = model.run_with_hooks(full, fwd_hooks=vec.hooks(model, ids.shape[1] - 1) if vec else [])
    return new, torch.log_softmax(logits[0, ids.shape[1] - 1:-1].double(), -1)


def _teacher_forced(llm, ids, new):
    """llama.cpp's greedy choice after the prompt and after each prefix of ``new`` (tvmech's tokens)."""
    llm.reset()
    llm.eval(ids + new[:-1])
    return [int(np.argmax(llm.scores[len(ids) - 1 + i])) for i in range(len(new))]


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
    tol, runs = 0.0, []
    for prompt in PROMPTS:
        ids = _ids(default_model, prompt)
        row = ids[0].tolist()
        for name, tv_vec, buffer in (("plain", None, None), ("steered", vec, buf)):
            new_t, lp_t = _tvmech(default_model, prompt, ids, N_NEW, tv_vec)
            _set(llm, buffer)
            new_l, lp_l = _llama(llm, row, N_NEW)
            forced = _teacher_forced(llm, row, new_t)
            d = float((lp_t[0] - lp_l).abs().max())
            tol = max(tol, d) if name == "plain" else tol  # measured without a vector (prompts so far)
            top2 = lp_t.topk(2, -1).values
            runs.append((prompt, name, new_t, new_l, forced, (top2[:, 0] - top2[:, 1]).tolist(), d))
        _set(llm, _buffer_by_llama_cpps_rules(shifted, n_layers, llm.n_embd()))
        _, off = _llama(llm, row, 0)
        _set(llm, None)
        runs.append((prompt, "off by one", None, None, None, None, float((_tvmech(default_model, prompt, ids, 1, vec)
                                                                          [1][0] - off).abs().max())))
    dec = tv.adapt(default_model).tokenizer.decode
    for prompt, name, new_t, new_l, forced, margins, d in runs:
        texts = f"tvmech {dec(new_t)!r} llama.cpp {dec(new_l)!r} " if new_t is not None else ""
        print(f"{prompt!r} {name}: {texts}max|dlogp| {d:.4f} (tolerance {tol:.4f})")
    for prompt, name, new_t, new_l, forced, margins, d in runs:
        if name == "off by one":  # the null: the vector one block off is far outside the tolerance
            assert d > 2 * tol, (prompt, d, tol)
            continue
        assert d <= 2 * tol, (prompt, name, d, tol)  # the measured quantisation tolerance, with margin
        # the same greedy token at every step, except where tvmech's top two are within the tolerance (a tie)
        assert all(f == t or m < 2 * tol for f, t, m in zip(forced, new_t, margins)), (prompt, name, forced, new_t)
    plain = {p: t for p, n, t, *_ in runs if n == "plain"}
    assert all(t != plain[p] for p, n, t, *_ in runs if n == "steered")  # the vector changes the continuation


def test_apply_to_llama_equals_the_raw_call(llm, vec, tmp_path, default_model):
    path = vec.to_control_vector(tmp_path / "cvec.gguf")
    ids = _ids(default_model, PROMPTS[0])[0].tolist()
    apply_to_llama(llm, path)
    got, lp_a = _llama(llm, ids, 4)
    _set(llm, _buffer_by_llama_cpps_rules(path, llama_cpp.llama_model_n_layer(llm._model.model), llm.n_embd()))
    want, lp_b = _llama(llm, ids, 4)
    apply_to_llama(llm, None)
    assert got == want and torch.equal(lp_a, lp_b)
