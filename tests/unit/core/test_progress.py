"""One progress-bar convention: every public call that can take more than a few seconds takes ``progress: bool =
True``; ``progress=False`` and ``TQDM_DISABLE=1`` turn its bar off."""

import inspect

import pytest

from tvmech.analysis import evaluation, head_attribution
from tvmech.core.progress import tqdm
from tvmech.data.tasks import builtin_task
from tvmech.experiments import (
    common,
    composition,
    geometry,
    icl,
    key_heads,
    layer_sweep,
    ov_reconstruction,
    peft,
    robustness,
    synthetic,
    vectors,
)
from tvmech.methods import learned, peft_training
from tvmech.methods.training import loop
from tvmech.pipeline.steps import STEPS
from tvmech.synthetic import analysis as synthetic_analysis
from tvmech.synthetic import pretraining

# the public calls that can take more than a few seconds on the default model on a CPU (function vectors: see
# tvmech.methods.function_vectors; W_TV's fit: tvmech.analysis.tv_map)
LONG_CALLS = [
    learned.learn_task_vector, learned.learn_layer_sweep, loop.fit, peft_training.train_peft, pretraining.train,
    evaluation.evaluate, evaluation.evaluate_multi, evaluation.evaluate_prompts, evaluation.evaluate_prompts_multi,
    head_attribution.ablation_effects, head_attribution.ablated_accuracies, head_attribution.ablated_accuracies_many,
    head_attribution.ablated_accuracy, common.learned_vectors, vectors.layer_vectors, vectors.VectorStore.get,
    icl.icl_accuracy, layer_sweep.layer_sweep, robustness.robustness_table, geometry.transfer_matrix,
    composition.composition_experiment, ov_reconstruction.reconstruction_accuracy, key_heads.key_vs_random,
    key_heads.taylor_vs_exact, peft.compare_peft, synthetic.trained_model, synthetic.run_task,
    synthetic_analysis.learned_vs_extracted,
    *(step.experiment.run for step in STEPS.values()),
]


@pytest.mark.parametrize("call", LONG_CALLS, ids=lambda f: f"{f.__module__}.{f.__qualname__}")
def test_every_long_call_takes_progress_true_by_default(call):
    param = inspect.signature(call).parameters.get("progress")
    assert param is not None, f"{call.__qualname__} takes no progress argument"
    assert param.default is True and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def test_the_bar_follows_progress_and_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not tqdm(range(2), disable=False).disable and tqdm(range(2), disable=True).disable
    for value in ("1", "true", "Yes"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert tqdm(range(2), disable=False).disable  # (tqdm alone lets disable=False win over the environment)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not tqdm(range(2), disable=False).disable


def test_an_evaluation_shows_its_bar_unless_told_not_to(tiny, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    task = builtin_task("capitalize")
    queries = task.splits(0).test[:4]

    def bar(**kw) -> str:
        evaluation.evaluate(tiny, task, queries, batch_size=2, **kw)
        return capsys.readouterr().err

    assert "capitalize k=0" in bar()
    assert bar(progress=False) == ""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert bar() == ""
