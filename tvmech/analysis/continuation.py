"""Generation accuracy: whether the greedy continuation of each prompt starts with its label.

Where :func:`tvmech.analysis.evaluation.evaluate` scores the logits at the query (one forward pass), this scores
what the model *writes*: each prompt is continued greedily (:func:`tvmech.interventions.generation.generate`, batched,
with the intervention placed at each prompt's query as in evaluation), the new tokens are decoded, and

    correct  <=>  continuation.lstrip().startswith(label.strip())

with ``label`` the example's output (e.g. ``"Paris"``): leading whitespace of the continuation (the template's space
or newline before the answer, in whatever tokens it came) is ignored, and what follows the label is not read (``"
Paris, France"`` counts for ``"Paris"``; ``" Par"`` + ``"is"`` too). An empty label is never correct.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvmech.analysis.evaluation import EvalResult
from tvmech.core.adapter import adapt
from tvmech.data.prompts import label_ids, make_prompts, prompt_roles
from tvmech.data.tasks import Example, Task
from tvmech.interventions.engine import Intervention
from tvmech.interventions.generation import generate

SCORING = "generation"  # the scoring name of a generation accuracy's EvalResult


def starts_with_label(continuation: str, label: str) -> bool:
    """The rule of the module docstring: ``continuation.lstrip().startswith(label.strip())``, and a label that is
    not empty."""
    label = label.strip()
    return bool(label) and continuation.lstrip().startswith(label)


def generation_accuracy(model, task: Task, queries: Sequence[Example], k: int = 0, demos: Sequence[Example] = (), *,
                        seed: int = 0, intervention: Intervention | None = None, max_new_tokens: int | None = None,
                        batch_size: int = 32) -> EvalResult:
    """Share of ``queries`` whose greedy continuation starts with the label (module docstring), ``k``-shot.

    Args:
        model: a loaded model or its adapter.
        task: the task (template, labels).
        queries: the test queries (at least one).
        k: demonstrations per prompt, drawn (seeded) from ``demos`` as in :func:`~tvmech.analysis.evaluation.evaluate`.
        demos: where the demonstrations come from.
        seed: seed of the demonstrations.
        intervention: what every pass carries (e.g. a task vector), at each prompt's query and role positions (as
            in evaluation); or one per query (:func:`~tvmech.interventions.generation.generate`).
        max_new_tokens: tokens to generate per prompt; default the longest label's token count plus one (room for
            a leading whitespace token).
        batch_size: prompts per forward pass.

    Returns:
        An :class:`~tvmech.analysis.evaluation.EvalResult` with scoring ``"generation"``; ``predictions`` are the
        continuations' texts.

    Raises:
        ValueError: no queries, or a prompt plus ``max_new_tokens`` beyond the model's context (before any pass).
    """
    if not queries:
        raise ValueError(f"task {task.name!r}: nothing to score: the list of queries is empty")
    ad = adapt(model)
    prompts = make_prompts(task, queries, k, demos, seed=seed)
    if max_new_tokens is None:
        max_new_tokens = 1 + max(len(label_ids(ad.tokenizer, task, p.label)) for p in prompts)
    texts = [p.text for p in prompts]
    roles = [prompt_roles(ad.tokenizer, p, ad.tokenizer(p.text, add_special_tokens=False)["input_ids"])
             for p in prompts]
    gens = generate(ad, texts, max_new_tokens, intervention=intervention, batch_size=batch_size, roles=roles)
    correct = [starts_with_label(g.text, p.label) for g, p in zip(gens, prompts)]
    return EvalResult(task.name, k, SCORING, sum(correct) / len(correct), len(correct), correct,
                      [g.text for g in gens])


__all__ = ["generation_accuracy", "starts_with_label"]
