"""Zero-shot and k-shot prompts, label tokenization, and right-padded batches with known query positions.

Every prompt is tokenized on its own (no special tokens added; SmolLM2's tokenizer adds none) and the
label continuation ``template.answer`` is tokenized separately, so a batch row is
``prompt_ids + label_ids + padding``. The *query position* of a row is the index of its last prompt
token: the logits there predict the first label token. Rows are padded on the right, so positions
never shift and, under the causal mask, padding cannot influence any real position.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from tvmech.data.tasks import Example, Task


@dataclass(frozen=True)
class Prompt:
    text: str
    label: str  # the task output, e.g. "Paris"
    query: str  # the task input, e.g. "France"
    k: int


def make_prompts(task: Task, queries: Sequence[Example], k: int, demos: Sequence[Example] = (),
                 seed: int = 0, shuffle_labels: bool = False) -> list[Prompt]:
    """One prompt per query with ``k`` demonstrations drawn (seeded) from ``demos``.

    A query's own input is never among its demonstrations, and no input appears twice in one prompt:
    demonstrations are drawn from the distinct inputs of ``demos`` (for an input listed more than
    once, its first example). ``shuffle_labels`` permutes the outputs among the chosen
    demonstrations (the label-shuffled prompts of Todd et al. 2024).

    Args:
        task: gives the template.
        queries: one prompt each, in order.
        k: demonstrations per prompt.
        demos: where demonstrations come from.
        seed: seed of the draws.
        shuffle_labels: permute the outputs among each prompt's demonstrations.

    Returns:
        The prompts, in the order of ``queries``.

    Raises:
        ValueError: ``k < 0``, or a query has fewer than ``k`` distinct demonstrations other than
            its own input (the message says how many are available).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    first: dict[str, Example] = {}
    for d in demos:
        first.setdefault(d.input, d)
    distinct, inputs = list(first.values()), first.keys()
    if k:
        short = [q for q in queries if len(distinct) - (q.input in inputs) < k]
        if short:
            q = short[0]
            n = len(distinct) - (q.input in inputs)
            excluded = f" (query {q.input!r} is excluded from its own demonstrations)" if q.input in inputs else ""
            raise ValueError(f"k={k} demonstrations requested but only {n} distinct demonstrations are available "
                             f"for task {task.name!r}{excluded}; pass more demos or a smaller k (at most {n})")
    rng, label_rng = random.Random(seed), random.Random(f"{seed}-labels")
    out = []
    for q in queries:
        pool = [d for d in distinct if d.input != q.input]
        chosen = rng.sample(pool, k) if k else []
        if shuffle_labels:
            outs = [d.output for d in chosen]
            label_rng.shuffle(outs)
            chosen = [Example(d.input, o) for d, o in zip(chosen, outs)]
        out.append(Prompt(task.template.prompt(chosen, q.input), q.output, q.input, k))
    return out


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def label_ids(tokenizer: Any, task: Task, output: str) -> list[int]:
    """Tokens of the label continuation (e.g. ``" Paris"``); raises if it tokenizes to nothing."""
    ids = encode_text(tokenizer, task.template.label(output))
    if not ids:
        raise ValueError(f"label {output!r} of task {task.name!r} tokenizes to nothing")
    return ids


def label_set_ids(tokenizer: Any, task: Task) -> list[int]:
    """First token of each label in the task's closed label set; they must be distinct."""
    if not task.labels:
        raise ValueError(f"task {task.name!r} has no closed label set")
    firsts = [label_ids(tokenizer, task, lab)[0] for lab in task.labels]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"task {task.name!r}: labels {task.labels} share a first token; "
                         "restricted scoring is ambiguous")
    return firsts


@dataclass
class Batch:
    """A right-padded batch. ``label_mask[b, p]`` marks positions whose logits predict a label token."""

    tokens: Int[Tensor, "batch seq"]
    query_pos: Int[Tensor, " batch"]
    label_first: Int[Tensor, " batch"]
    targets: Int[Tensor, "batch seq"]  # label token predicted at each position, -100 elsewhere
    lengths: Int[Tensor, " batch"]  # prompt length + label length (when included)

    @property
    def label_mask(self) -> Tensor:
        return self.targets != -100

    def to(self, device: torch.device | str) -> Batch:
        parts = (self.tokens, self.query_pos, self.label_first, self.targets, self.lengths)
        return Batch(*(t.to(device) for t in parts))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def encode(tokenizer: Any, task: Task, prompts: Sequence[Prompt], *, with_labels: bool = False,
           pad_id: int | None = None) -> Batch:
    """Tokenize prompts into a right-padded :class:`Batch`.

    With ``with_labels`` the label tokens follow each prompt (teacher forcing), so ``targets`` holds
    every label token at the position that predicts it; otherwise only the first label token is
    targeted, at the query position.
    """
    if not prompts:
        raise ValueError("no prompts to encode")
    pad = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    rows, qpos, firsts, labs = [], [], [], []
    for p in prompts:
        ids = encode_text(tokenizer, p.text)
        lab = label_ids(tokenizer, task, p.label)
        if not ids:
            raise ValueError(f"prompt {p.text!r} tokenizes to nothing")
        qpos.append(len(ids) - 1)
        firsts.append(lab[0])
        labs.append(lab)
        rows.append(ids + (lab if with_labels else []))
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    for b, (row, q, lab) in enumerate(zip(rows, qpos, labs)):
        tokens[b, : len(row)] = torch.tensor(row)
        n = len(lab) if with_labels else 1
        targets[b, q : q + n] = torch.tensor(lab[:n])
    return Batch(tokens, torch.tensor(qpos), torch.tensor(firsts), targets, torch.tensor([len(r) for r in rows]))


def batches(tokenizer: Any, task: Task, prompts: Sequence[Prompt], batch_size: int = 16, *,
            with_labels: bool = False) -> Iterator[tuple[list[int], Batch]]:
    """Yield ``(indices, batch)`` with prompts grouped by length to keep padding small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].text))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, encode(tokenizer, task, [prompts[i] for i in idx], with_labels=with_labels)
