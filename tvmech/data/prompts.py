"""Zero-shot and k-shot prompts, label tokenization, and right-padded batches with known query positions.

Every prompt is tokenized on its own (no special tokens added; SmolLM2's tokenizer adds none) and the
label continuation ``template.answer`` is tokenized separately, so a batch row is
``prompt_ids + label_ids + padding``. The *query position* of a row is the index of its last prompt
token: the logits there predict the first label token. Rows are padded on the right, so positions
never shift and, under the causal mask, padding cannot influence any real position.

Role positions. Each row also records where the query's input sits (``Batch.roles``, absolute token indices):
``input_first``, the first token whose character span overlaps the input text (so a token that merges the
space before the input with its first word, `` Afghanistan``, is the input's first token), and
``before_input``, the token before it (-1 when the input starts the prompt: undefined). Character spans
come from the tokenizer's offsets where it gives them (fast tokenizers), else from encoding the text before
the input on its own (:func:`first_overlapping`). :mod:`tvmech.interventions.sites` resolves positions named
by these roles row by row.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from tvmech.core.checks import as_items
from tvmech.data.tasks import Example, Task, as_examples


@dataclass(frozen=True)
class Prompt:
    """One prompt as :func:`make_prompts` builds it: its text and the answer it asks for."""

    text: str
    """The full prompt: instruction, ``k`` demonstrations, then the query (ends before the answer)."""
    label: str
    """The task output the prompt asks for, e.g. ``"Paris"``."""
    query: str
    """The task input of the query, e.g. ``"France"``."""
    k: int
    """The number of demonstrations in the prompt."""
    span: tuple[int, int] | None = None
    """Character span ``[start, stop)`` of the query's input in ``text`` (``None``: its last occurrence, see
    :func:`input_span`)."""


HOW_PROMPTS = "build them from examples with make_prompts(task, examples, k) (tvmech.make_prompts)"


def as_prompts(value: Any, what: str = "prompts") -> Sequence[Prompt]:
    """``value`` checked to be a sequence of :class:`Prompt` (see :func:`~tvmech.core.checks.as_items`).

    Args:
        value: the candidate.
        what: the argument's name in the message.

    Returns:
        The prompts (``value`` itself when it is a list or a tuple).

    Raises:
        ArgumentTypeError: a string, a single prompt, or an item that is not a :class:`Prompt` (an
            :class:`Example` included); the message says how to build prompts.
    """
    return as_items(value, Prompt, what, HOW_PROMPTS)


def input_span(prompt: Prompt) -> tuple[int, int]:
    """Character span ``[start, stop)`` of the query's input in the prompt's text: ``prompt.span`` (recorded by
    :func:`make_prompts`), else the input's last occurrence in the text."""
    if prompt.span is not None:
        return prompt.span
    start = prompt.text.rfind(prompt.query)
    if start < 0 or not prompt.query:
        raise ValueError(f"the query input {prompt.query!r} does not occur in prompt {prompt.text!r}")
    return start, start + len(prompt.query)


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
    queries, demos = as_examples(queries, "queries"), as_examples(demos, "demos")
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
        text = task.template.prompt(chosen, q.input)
        out.append(Prompt(text, q.output, q.input, k, _query_input_span(task, text, q.input)))
    return out


def _query_input_span(task: Task, text: str, query: str) -> tuple[int, int] | None:
    """Where the query's input sits in ``text`` (which ends with the formatted query template): the place of a
    sentinel in the template formatted with it; ``None`` unless the template holds ``{input}`` exactly once."""
    tail = task.template.query.format(input="\0")
    if tail.count("\0") != 1:
        return None
    start = len(text) - (len(tail) - 1 + len(query)) + tail.index("\0")
    return start, start + len(query)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def first_overlapping(tokenizer: Any, text: str, ids: Sequence[int], start: int, stop: int) -> int:
    """Index of the first token of ``ids`` (the tokens of ``text``) whose character span overlaps
    ``[start, stop)``.

    Spans come from the tokenizer's offsets (fast tokenizers; empty spans, e.g. special tokens, are skipped).
    Without offsets, the text up to and including the span's first character is encoded alone: its last token
    is the one that holds that character, at the same index in ``ids`` where the two encodings agree before it
    (else the first index where they differ).

    Raises:
        ValueError: no token overlaps the span.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"] if list(enc["input_ids"]) == list(ids) else None
    except (NotImplementedError, KeyError, TypeError, ValueError):
        offsets = None
    if offsets is not None:
        hit = next((i for i, (a, b) in enumerate(offsets) if b > a and a < stop and b > start), None)
    elif start < stop:
        head = encode_text(tokenizer, text[: start + 1])
        hit = next((i for i, (a, b) in enumerate(zip(head[:-1], ids)) if a != b), len(head) - 1)
        hit = hit if 0 <= hit < len(ids) else None
    else:
        hit = None
    if hit is None:
        raise ValueError(f"no token of {text!r} overlaps characters {start}..{stop}")
    return hit


def prompt_roles(tokenizer: Any, prompt: Prompt, ids: Sequence[int]) -> dict[str, int]:
    """Absolute token index of each role of ``prompt`` (see the module docstring): ``input_first`` and
    ``before_input`` (-1 where the input starts the prompt); both -1 where the input cannot be placed (it does
    not occur in the text)."""
    try:
        first = first_overlapping(tokenizer, prompt.text, ids, *input_span(prompt))
    except ValueError:
        return {"input_first": -1, "before_input": -1}
    return {"input_first": first, "before_input": first - 1}


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
    """Token ids, each row ``prompt + label (when included) + padding``."""
    query_pos: Int[Tensor, " batch"]
    """Each row's query position: the index of its last prompt token (its logits predict the first label
    token)."""
    label_first: Int[Tensor, " batch"]
    """Each row's first label token."""
    targets: Int[Tensor, "batch seq"]
    """The label token predicted at each position, -100 elsewhere."""
    lengths: Int[Tensor, " batch"]
    """Each row's length without padding: prompt length + label length (when included)."""
    roles: dict[str, Int[Tensor, " batch"]] | None = None
    """Role name -> each row's absolute token index (-1: undefined), see :func:`prompt_roles`; ``None``: not
    recorded."""

    @property
    def label_mask(self) -> Tensor:
        """``[batch, seq]`` booleans: the positions whose logits predict a label token."""
        return self.targets != -100

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on ``device``."""
        parts = (self.tokens, self.query_pos, self.label_first, self.targets, self.lengths)
        roles = None if self.roles is None else {k: v.to(device) for k, v in self.roles.items()}
        return Batch(*(t.to(device) for t in parts), roles)

    def __len__(self) -> int:
        return self.tokens.shape[0]


def encode(tokenizer: Any, task: Task, prompts: Sequence[Prompt], *, with_labels: bool = False,
           pad_id: int | None = None) -> Batch:
    """Tokenize prompts into a right-padded :class:`Batch`.

    With ``with_labels`` the label tokens follow each prompt (teacher forcing), so ``targets`` holds
    every label token at the position that predicts it; otherwise only the first label token is
    targeted, at the query position. ``roles`` holds each row's role positions (:func:`prompt_roles`).
    """
    if not as_prompts(prompts):
        raise ValueError("no prompts to encode")
    pad = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    rows, qpos, firsts, labs, roles = [], [], [], [], []
    for p in prompts:
        ids = encode_text(tokenizer, p.text)
        lab = label_ids(tokenizer, task, p.label)
        if not ids:
            raise ValueError(f"prompt {p.text!r} tokenizes to nothing")
        roles.append(prompt_roles(tokenizer, p, ids))
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
    role_pos = {name: torch.tensor([r[name] for r in roles]) for name in roles[0]}
    return Batch(tokens, torch.tensor(qpos), torch.tensor(firsts), targets, torch.tensor([len(r) for r in rows]),
                 role_pos)


def batches(tokenizer: Any, task: Task, prompts: Sequence[Prompt], batch_size: int = 16, *,
            with_labels: bool = False) -> Iterator[tuple[list[int], Batch]]:
    """Yield ``(indices, batch)`` with prompts grouped by length to keep padding small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompts = as_prompts(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].text))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, encode(tokenizer, task, [prompts[i] for i in idx], with_labels=with_labels)
