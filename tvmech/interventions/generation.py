"""Greedy generation with interventions, many prompts at once, with and without a KV cache.

Sites are relative to each *prompt*: position ``-1`` is the prompt's last token (its query), whatever has been
generated since, so a task vector injected at the query stays where it was put and the new tokens read it through
attention; generated tokens themselves are not written to (an intervention without positions, e.g. a LoRA, acts on
every token, generated ones included).

Batching. Prompts of one batch are right-padded to the longest, ``L_max``; row ``b`` has ``L_b`` tokens and its
query at ``q_b = L_b - 1`` (the :class:`~tvmech.interventions.sites.Context` holds every row's ``q_b``, so writes land
on each row's own positions). Row ``b``'s ``t``-th new token has position ``L_b + t`` (``position_ids``, so rotary
and learned position embeddings see the positions of the prompt alone) and occupies cache slot ``L_max + t``; the
attention mask hides the padding slots ``L_b .. L_max - 1``. Causal attention never reads padding, so every row
computes what it computes alone, and the tokens are equal to one prompt at a time (tested in float32 on the CPU, on
every architecture of the test matrix and on the default model; GPU kernels picked by batch shape may round
differently). Rows stop at their own end-of-sequence token (``stop_at_eos``) or
context limit; the batch stops when every row has.

Sliding windows. A sliding-window layer (Gemma-2/3, Mistral) counts its window ``W`` in cache slots, which include
a row's padding: it would hide prompt tokens that row ``b`` sees alone once a slot reaches ``W``. So padded rows
share a batch only while ``L_max + max_new_tokens <= W``; past that, prompts are batched with prompts of their own
length (no padding), and the result is still exact.

Context. ``L_b + max_new_tokens`` tokens must fit the model's context ``n_ctx`` (:attr:`Adapter.n_ctx
<tvmech.core.adapter.Adapter.n_ctx>`): otherwise a ``ValueError`` naming both numbers is raised before any forward
pass, or, with ``truncate=True``, row ``b`` stops after ``n_ctx - L_b`` tokens (``Generation.stop == "context"``).

* ``use_cache=True``: the wrapped Hugging Face model with the bridge's components taken out
  (:meth:`tvmech.core.adapter.Adapter.native`) runs Hugging Face's own KV cache (its current ``cache=`` argument;
  ``past_key_values=`` on transformers releases without it), and the intervention is attached as PyTorch module
  hooks (:func:`tvmech.interventions.engine.attached`, ``native=True``); each decoding pass sees one new token per
  row at cache slot ``Context.offset``, so writes to prompt positions are not repeated. The bridge's own cached
  decoding is not used: on TransformerLens 4.3 it diverges from full forward passes after the first new token.
* ``use_cache=False``: every new token comes from a full forward pass of every row's whole sequence (right-padded)
  through the TransformerLens model, the intervention as TransformerLens hooks: the reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Int
from torch import Tensor

from tvmech.core.adapter import Adapter, adapt
from tvmech.core.checks import check_bool, check_int
from tvmech.interventions.engine import Intervention, attached
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Context
from tvmech.interventions.task_vector import TaskVector

STOPS: tuple[str, ...] = ("max_new_tokens", "eos", "context")


@dataclass(frozen=True)
class Generation:
    """The prompt's tokens, the new tokens and their text; ``stop``: why generation ended (:data:`STOPS`):
    ``max_new_tokens`` reached, the end-of-sequence token (``stop_at_eos``), or the model's context (``truncate``)."""

    prompt_ids: tuple[int, ...]
    """The prompt's token ids."""
    new_ids: tuple[int, ...]
    """The generated token ids."""
    text: str
    """The generated text (the new tokens decoded)."""
    stop: str = "max_new_tokens"
    """Why generation ended (:data:`STOPS`)."""


def generate(model, prompts: str | Sequence[str], max_new_tokens: int = 20, *,
             intervention: Intervention | Sequence[Intervention | None] | None = None, use_cache: bool = True,
             stop_at_eos: bool = False, batch_size: int = 32, truncate: bool = False,
             roles: Sequence[dict[str, int]] | None = None) -> list[Generation]:
    """Greedy continuation of each prompt, ``batch_size`` prompts per forward pass (see the module docstring).

    Args:
        model: a TransformerLens bridge (or its :class:`~tvmech.core.adapter.Adapter`).
        prompts: one prompt or several; tokenized without special tokens, as tvmech's prompts are.
        max_new_tokens: how many tokens to add to each prompt (>= 1).
        intervention: one intervention shared by every prompt (e.g. a
            :class:`~tvmech.interventions.injection.Injection` or a TaskVector), sites relative to each prompt's last
            token; or one per prompt: a sequence of Injections / TaskVectors at the same sites (``None`` for a row
            without a vector, ``add`` mode only), or one per-row Injection (``vectors`` of shape ``[n_prompts,
            n_layers, n_positions, d_model]``, e.g. ``Injection(v[:, None, None], (layer,))`` for a ``[n_prompts,
            d_model]`` tensor ``v``).
        use_cache: decode with Hugging Face's KV cache (fast) or with full forward passes (reference).
        stop_at_eos: stop a prompt early when the end-of-sequence token comes.
        batch_size: prompts per forward pass (1: one prompt at a time; the tokens are the same).
        truncate: where a prompt plus ``max_new_tokens`` exceeds the model's context, stop that prompt at the
            context's end instead of raising.
        roles: each prompt's token index of each role (:func:`tvmech.data.prompts.prompt_roles`), for interventions
            at role positions (``"input_first"`` ...); ``None``: integer positions only.

    Returns:
        One :class:`Generation` per prompt, in the order given.

    Raises:
        ValueError: ``max_new_tokens < 1``, no prompts, an empty prompt, a prompt plus ``max_new_tokens`` beyond the
            model's context (without ``truncate``; with it, a prompt that fills the context alone), or interventions
            that do not fit the prompts; all before any forward pass.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    truncate, stop_at_eos = check_bool(truncate, "truncate"), check_bool(stop_at_eos, "stop_at_eos")
    ad = adapt(model)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts to generate from")
    ids = [ad.tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]
    empty = next((i for i, x in enumerate(ids) if not x), None)
    if empty is not None:
        raise ValueError(f"prompt {empty} ({prompts[empty]!r}) has no tokens")
    budgets = context_budgets([len(x) for x in ids], max_new_tokens, ad.n_ctx, truncate=truncate, texts=prompts)
    per_prompt = per_prompt_interventions(ad, intervention, len(prompts))
    if roles is not None and len(roles) != len(prompts):
        raise ValueError(f"{len(roles)} role records for {len(prompts)} prompts: give one per prompt")
    eos = ad.tokenizer.eos_token_id if stop_at_eos else None
    run = _cached if use_cache else _uncached
    out: list[Generation | None] = [None] * len(prompts)
    for group in batch_groups([len(x) for x in ids], budgets, batch_size, sliding_window(ad)):
        ctx = Context(torch.tensor([len(ids[i]) - 1 for i in group], device=ad.device), roles=None if roles is None
                      else {k: torch.tensor([roles[i][k] for i in group], device=ad.device) for k in roles[0]})
        news = run(ad, [ids[i] for i in group], [budgets[i] for i in group],
                   stack_interventions(ad, [per_prompt[i] for i in group]), eos, ctx)
        for i, new in zip(group, news):
            stop = "eos" if eos is not None and new[-1] == eos else \
                "context" if len(new) < max_new_tokens else "max_new_tokens"
            out[i] = Generation(tuple(ids[i]), tuple(new), ad.tokenizer.decode(new), stop)
    return out  # type: ignore[return-value]


def context_budgets(lengths: Sequence[int], max_new_tokens: int, n_ctx: int | None, *, truncate: bool = False,
                    texts: Sequence[str] | None = None) -> list[int]:
    """How many tokens each prompt may add: ``max_new_tokens``, or what is left of the context with ``truncate``.

    Args:
        lengths: each prompt's token count ``L_b``.
        max_new_tokens: the tokens asked for.
        n_ctx: the model's context length (``None``: unknown, no bound).
        truncate: stop at the context's end instead of raising.
        texts: the prompts, for the message.

    Returns:
        ``min(max_new_tokens, n_ctx - L_b)`` per prompt (``max_new_tokens`` without a bound).

    Raises:
        ValueError: ``L_b + max_new_tokens > n_ctx`` without ``truncate``, or ``L_b >= n_ctx`` (no room left), naming
            the prompt, both numbers and the context length.
    """
    if n_ctx is None:
        return [max_new_tokens] * len(lengths)
    for i, n in enumerate(lengths):
        if n + max_new_tokens <= n_ctx or (truncate and n < n_ctx):
            continue
        text = "" if texts is None else texts[i] if len(texts[i]) <= 60 else texts[i][:60] + "..."
        name = f"prompt {i}" + (f" ({text!r})" if texts is not None else "")
        if truncate:
            raise ValueError(f"{name} is {n} tokens long, which leaves no room in the model's context of {n_ctx} "
                             "tokens for a new token: shorten it")
        fix = (f"ask for at most {n_ctx - n} new tokens, or pass truncate=True to stop at the context's end"
               if n < n_ctx else "shorten the prompt (it leaves no room for a new token)")
        raise ValueError(f"{name} is {n} tokens long; with max_new_tokens={max_new_tokens} that is "
                         f"{n + max_new_tokens} tokens, beyond the model's context of {n_ctx} tokens: {fix}")
    return [min(max_new_tokens, n_ctx - n) for n in lengths]


def sliding_window(model) -> int | None:
    """The window (in tokens) of the model's sliding-window attention layers, ``None`` where it has none."""
    hf = getattr(adapt(model).model, "original_model", None)
    cfg = getattr(hf, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    window, types = getattr(cfg, "sliding_window", None), getattr(cfg, "layer_types", None)
    if not isinstance(window, int) or isinstance(window, bool) or (types is not None and "sliding_attention"
                                                                   not in types):
        return None
    return window


def batch_groups(lengths: Sequence[int], budgets: Sequence[int], batch_size: int, window: int | None = None
                 ) -> list[list[int]]:
    """Prompt indices by forward pass: sorted by length (less padding), ``batch_size`` at a time, and split into
    groups of one length where a sliding ``window`` could cut (``L_max + max budget > window``; module docstring).

    Args:
        lengths: each prompt's token count.
        budgets: each prompt's new-token budget.
        batch_size: prompts per pass.
        window: the sliding window, or ``None``.

    Returns:
        Groups of indices into ``lengths``, each run as one padded batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    out = []
    for chunk in chunks:
        if window is None or max(lengths[i] for i in chunk) + max(budgets[i] for i in chunk) <= window:
            out.append(chunk)
        else:
            out.extend([i for i in chunk if lengths[i] == n] for n in dict.fromkeys(lengths[i] for i in chunk))
    return out


def per_prompt_interventions(model, intervention, n: int) -> list[Intervention | None]:
    """``intervention`` as one entry per prompt (see :func:`generate`); checks counts and types.

    Raises:
        ValueError: a count that is not ``n``, or an Injection restricted to ``rows`` (generate batches itself).
        TypeError: an entry that is not an intervention.
    """
    if intervention is None:
        return [None] * n
    if isinstance(intervention, Intervention):
        inj = _injection(model, intervention) if _per_row(intervention) else None
        if inj is None:
            return [intervention] * n
        if inj.vectors.shape[0] != n:
            raise ValueError(f"a per-row injection of {inj.vectors.shape[0]} rows does not fit {n} prompts")
        return [replace(inj, vectors=inj.vectors[i]) for i in range(n)]
    if isinstance(intervention, (str, bytes)) or not isinstance(intervention, Sequence):
        raise TypeError(f"intervention must be an Intervention, a sequence of them (one per prompt) or None, got "
                        f"{type(intervention).__name__}")
    items = list(intervention)
    if len(items) != n:
        raise ValueError(f"{len(items)} interventions for {n} prompts: give one per prompt, or one shared by all")
    bad = next((x for x in items if x is not None and not isinstance(x, Intervention)), None)
    if bad is not None:
        raise TypeError(f"one intervention per prompt: got a {type(bad).__name__} among them")
    return items


def stack_interventions(model, items: Sequence[Intervention | None]) -> Intervention | None:
    """One intervention for a batch whose row ``b`` carries ``items[b]``: the shared one when all rows carry the
    same object, else one per-row :class:`Injection` (rows without one get a zero vector, exact in ``add`` mode).

    Raises:
        TypeError: rows that differ, but not all by Injections / TaskVectors.
        ValueError: injections at different sites, points or modes, or a missing one in ``replace`` mode.
    """
    if all(x is items[0] for x in items):
        return items[0]
    injs = [None if x is None else _injection(model, x) for x in items]
    if any(x is not None and inj is None for x, inj in zip(items, injs)):
        kind = next(type(x).__name__ for x, inj in zip(items, injs) if x is not None and inj is None)
        raise TypeError(f"prompts carry different interventions, which must then be Injections or TaskVectors (one "
                        f"vector per row); got a {kind}: share one intervention, or generate those prompts separately")
    ref = next(inj for inj in injs if inj is not None)
    sites = (ref.layers, ref.positions, ref.point, ref.mode)
    other = next((inj for inj in injs if inj is not None and (inj.layers, inj.positions, inj.point, inj.mode)
                  != sites), None)
    if other is not None:
        raise ValueError(f"per-prompt injections must share layers, positions, point and mode: {sites} vs "
                         f"{(other.layers, other.positions, other.point, other.mode)}")
    if ref.mode != "add" and any(inj is None for inj in injs):
        raise ValueError("a prompt without an injection among replace-mode injections: give every prompt one")
    shape = (len(ref.layers), len(ref.positions), ref.vectors.shape[-1])
    dtype = ref.vectors.dtype
    for inj in injs:
        dtype = dtype if inj is None else torch.promote_types(dtype, inj.vectors.dtype)
    rows = [ref.vectors.new_zeros(shape, dtype=dtype) if inj is None else
            inj.vectors.to(ref.vectors.device, dtype).expand(shape) for inj in injs]
    return Injection(torch.stack(rows), ref.layers, ref.positions, ref.point, ref.mode)


def _injection(model, x: Intervention) -> Injection | None:
    """``x`` as an :class:`Injection` (a TaskVector's, checked against the model), ``None`` for other kinds."""
    if isinstance(x, TaskVector):
        x.check_model(model)
        x = x.injection
    if not isinstance(x, Injection):
        return None
    if x.rows is not None:
        raise ValueError(f"an injection restricted to rows {x.rows} (a row group of a batched sweep): generate "
                         "batches the prompts itself; pass one intervention per prompt instead")
    return x


def _per_row(x: Intervention) -> bool:
    return isinstance(x, (Injection, TaskVector)) and x.vectors.ndim == 4


def _padded(ad: Adapter, rows: Sequence[Sequence[int]]) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-padded token ids (padding: token 0, never attended to) and each row's length."""
    lens = torch.tensor([len(r) for r in rows], device=ad.device)
    ids = torch.zeros(len(rows), int(lens.max()), dtype=torch.long, device=ad.device)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r, device=ad.device)
    return ids, lens


def _advance(news: list[list[int]], done: list[bool], nxt: list[int], budgets: Sequence[int], eos) -> bool:
    """Append each unfinished row's token; mark rows that reach their budget or ``eos``. Whether all are done."""
    for b, t in enumerate(nxt):
        if not done[b]:
            news[b].append(t)
            done[b] = t == eos or len(news[b]) >= budgets[b]
    return all(done)


def _uncached(ad: Adapter, rows: Sequence[Sequence[int]], budgets: Sequence[int], intervention, eos, ctx: Context
              ) -> list[list[int]]:
    seqs = [list(r) for r in rows]
    news: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    with torch.no_grad(), attached(ad, intervention, ctx, native=False):
        while True:
            ids, cur = _padded(ad, seqs)
            final = ad.residual(ids, ad.n_layers)
            nxt = ad.unembed(final[torch.arange(len(seqs), device=final.device), cur.to(final.device) - 1])
            nxt = nxt.argmax(-1).tolist()
            if _advance(news, done, nxt, budgets, eos):
                return news
            for b, t in enumerate(nxt):
                if not done[b]:
                    seqs[b].append(t)


def _cached(ad: Adapter, rows: Sequence[Sequence[int]], budgets: Sequence[int], intervention, eos, ctx: Context
            ) -> list[list[int]]:
    ids, lens = _padded(ad, rows)
    n, width = ids.shape
    mask = (torch.arange(width, device=ids.device) < lens[:, None]).long()
    # a finished row is fed on at its last position (within the context): its tokens are no longer read
    last = lens + torch.tensor(budgets, device=lens.device) - 1
    news: list[list[int]] = [[] for _ in rows]
    done = [False] * n
    with torch.no_grad(), ad.native() as hf, attached(ad, intervention, ctx, native=True):
        name = _cache_name(hf)
        keep = torch.unique(lens - 1)  # logits only where a row's query is
        out = hf(input_ids=ids, attention_mask=mask, position_ids=torch.arange(width, device=ids.device).expand(n, -1),
                 use_cache=True, logits_to_keep=keep)
        logits = out.logits[torch.arange(n, device=ids.device), torch.searchsorted(keep, lens - 1)]
        for step in range(max(budgets)):
            nxt = logits.argmax(-1)
            if _advance(news, done, nxt.tolist(), budgets, eos):
                break
            ctx.offset = width + step  # the cache slot of the token fed now; every prompt site lies before it
            mask = torch.cat([mask, mask.new_ones(n, 1)], 1)
            pos = torch.minimum(lens + step, last)[:, None]
            out = hf(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                     **{name: getattr(out, name)})
            logits = out.logits[:, -1]
    return news


def _cache_name(hf) -> str:
    """The Hugging Face forward's KV-cache argument (and output field): ``cache``, ``past_key_values`` before it."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


__all__ = ["Generation", "STOPS", "generate", "context_budgets", "sliding_window", "batch_groups",
           "per_prompt_interventions", "stack_interventions"]
