"""Runs where CUDA exists (skipped on CPU-only CI): the default model on the GPU agrees with the CPU."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import last_logprobs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_default_model_on_cuda_matches_cpu(default_model):
    gpu = tv.load_model(device="cuda")
    assert tv.adapt(gpu).device.type == "cuda"
    task = tv.builtin_task("antonym")
    sp = task.splits(0)
    prompts = tv.make_prompts(task, sp.test[:20], 3, sp.train)
    cpu_lp = last_logprobs(default_model, task, prompts)
    gpu_lp = last_logprobs(gpu, task, prompts)
    assert (cpu_lp - gpu_lp).abs().max() < 1e-2
    acc_cpu = tv.evaluate(default_model, task, sp.test[:30], 5, sp.train).accuracy
    acc_gpu = tv.evaluate(gpu, task, sp.test[:30], 5, sp.train).accuracy
    assert abs(acc_cpu - acc_gpu) <= 1 / 30


def test_bfloat16_on_cuda_runs():
    gpu = tv.load_model(device="cuda", dtype=torch.bfloat16)
    task = tv.builtin_task("capitalize")
    sp = task.splits(0)
    assert tv.evaluate(gpu, task, sp.test[:20], 5, sp.train).accuracy > 0.5
