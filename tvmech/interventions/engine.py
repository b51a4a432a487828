"""The one engine that writes into a forward pass, and the one way an intervention is attached.

An :class:`Intervention` is a small object that says *what* to do at which sites: its :meth:`writes` are
``(layer, point, edit)`` triples, where ``edit(x, ctx)`` takes the activation at that point and returns
the new one (or ``None`` to leave it unchanged, as a capture does).

One internal path. Every pass that tvmech runs itself takes the intervention as an argument,
``intervention=`` (an :class:`Intervention` or ``None``): :func:`run_blocks` and :func:`residual` here (the
adapter's :meth:`~tvmech.core.adapter.Adapter.run_blocks` / :meth:`~tvmech.core.adapter.Adapter.residual`
with the intervention attached; they live here, not on the adapter, because ``core`` sits below
``interventions``), and on top of them evaluation and scoring
(:func:`tvmech.analysis.evaluation.evaluate` ...) and every analysis and algorithm. All of them attach it
through :func:`attached`, the only code that registers hooks, which picks the path once per pass:

* the fast path, where :meth:`Adapter.fast <tvmech.core.adapter.Adapter.fast>` allows it (a bridge, the switch
  of :mod:`tvmech.core.fast` on, no TransformerLens hook attached) and every write is at a point with a Hugging
  Face module (``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``, ``z``): plain PyTorch hooks on the
  Hugging Face modules, fired by the adapter's native layer loop (the bridge's components taken out:
  :meth:`Adapter.native <tvmech.core.adapter.Adapter.native>`);
* otherwise TransformerLens forward hooks, the reference path; the hook names are ``blocks.{l}.hook_resid_pre``
  and friends (:func:`site_name`).

KV-cache generation (:mod:`tvmech.interventions.generation`) asks :func:`attached` for the PyTorch hooks
(``native=True``: each pass sees only new tokens and :class:`~tvmech.interventions.sites.Context` carries their
offset), its full-pass reference for the TransformerLens hooks (``native=False``).

Two user-facing ways, for forward passes tvmech does not run itself:

* ``with intervention.apply(model, query_pos):`` every forward pass inside (``model(tokens)``,
  ``run_with_cache`` ...) carries the intervention as TransformerLens hooks, removed on exit;
* ``intervention.hooks(model, query_pos)``: the ``(hook_name, hook_fn)`` pairs, for TransformerLens users
  (``run_with_hooks``, ``model.hooks``).

Both paths give the same edit the same tensor, so an intervention behaves alike on either
(``tests/unit/interventions/test_engine.py``, ``tests/unit/core/test_fast_path.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter, HookFn, adapt
from tvmech.core.layers import PrefixKV
from tvmech.interventions.sites import Context

Edit = Callable[[Tensor, Context], "Tensor | None"]
# TransformerLens names, relative to blocks.{l}; "pattern", "ln1" and "resid_mid" are for reading only.
# Per-input points of the bridge (see tvmech.interventions.paths): "attn_in" / "mlp_in" are the inputs of the
# attention / MLP norms, or of the sublayer itself where the block has no such norm (OLMo-2; site_name asks the
# block's anatomy) (editing one changes what that sublayer reads, not the residual stream), "q_in",
# "k_in", "v_in" the inputs of the query / key / value projections (the normed residual).
_TL_NAMES = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "attn_out": "hook_attn_out",
             "mlp_out": "hook_mlp_out", "z": "attn.hook_z", "pattern": "attn.hook_pattern",
             "ln1": "ln1.hook_normalized", "resid_mid": "hook_resid_mid", "attn_in": "ln1.hook_in",
             "mlp_in": "ln2.hook_in", "q_in": "attn.q.hook_in", "k_in": "attn.k.hook_in", "v_in": "attn.v.hook_in"}

# an input point of a block without that norm: (the anatomy field that says so, the sublayer's own input)
_NORMED_INPUTS = {"attn_in": ("attn_norm", "attn.hook_in"), "mlp_in": ("mlp_norm", "mlp.hook_in")}


@dataclass(frozen=True)
class Write:
    """``edit`` applied at ``point`` of block ``layer``."""

    layer: int
    point: str
    edit: Edit


def site_name(model, layer: int, point: str) -> str:
    """The TransformerLens hook name of ``point`` in block ``layer`` (validates both)."""
    ad = adapt(model)
    ad.check_layer(layer)
    if point not in _TL_NAMES:
        raise ValueError(f"hook point {point!r} is not supported; valid: {', '.join(_TL_NAMES)}")
    if point in _NORMED_INPUTS and not getattr(ad.anatomy(layer), _NORMED_INPUTS[point][0]):
        return f"blocks.{layer}.{_NORMED_INPUTS[point][1]}"
    return f"blocks.{layer}.{_TL_NAMES[point]}"


class Intervention:
    """Base class: subclasses implement :meth:`writes`."""

    def writes(self, model: Adapter) -> list[Write]:
        """The edits this intervention makes (validated against ``model``)."""
        raise NotImplementedError

    def hooks(self, model, query_pos: Tensor | int | None = None, *, ctx: Context | None = None
              ) -> list[tuple[str, HookFn]]:
        """TransformerLens forward hooks for ``run_with_hooks`` / ``model.hooks`` (for TransformerLens users;
        tvmech's own passes take ``intervention=``).

        Args:
            model: a TransformerLens model or an :class:`~tvmech.core.adapter.Adapter`.
            query_pos: each row's query index (``[batch]``), one index for all rows, or ``None`` (the
                last token).
            ctx: a ready :class:`Context` instead of ``query_pos``.

        Returns:
            ``(hook_name, hook_fn)`` pairs.
        """
        ad = adapt(model)
        return _tl_hooks(ad, self.writes(ad), Context(query_pos) if ctx is None else ctx)

    @contextlib.contextmanager
    def apply(self, model, query_pos: Tensor | int | None = None) -> Iterator[Intervention]:
        """Context manager for forward passes tvmech does not run itself (``model(tokens)``, ``run_with_cache``):
        every pass inside it carries the intervention as TransformerLens hooks; they are removed on exit, also
        when the body raises. tvmech's own passes take ``intervention=`` instead (:func:`run_blocks`)."""
        with attached(model, self, Context(query_pos), native=False):
            yield self

    def __add__(self, other: Intervention) -> Compose:
        return Compose((self, other))


@dataclass(frozen=True)
class Compose(Intervention):
    """Several interventions at once, applied in the order given."""

    parts: tuple[Intervention, ...]
    """The interventions, in the order their writes are applied."""

    def writes(self, model: Adapter) -> list[Write]:
        return [w for part in self.parts for w in part.writes(model)]


def compose(parts: Sequence[Intervention]) -> Intervention:
    """One intervention made of ``parts`` (the part itself when there is one)."""
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else Compose(parts)


def as_context(ctx: Context | Tensor | int | None) -> Context:
    """``ctx`` itself, or the :class:`Context` of query positions (``[batch]``, one index, or ``None``: the last
    token)."""
    return ctx if isinstance(ctx, Context) else Context(ctx)


# ------------------------------------------------------------------------------------ the one path
@contextlib.contextmanager
def attached(model, intervention: Intervention | None, ctx: Context | Tensor | int | None = None, *,
             native: bool | None = None) -> Iterator[bool]:
    """Attach ``intervention`` for the passes run inside the block: the only code that registers hooks.

    Args:
        model: a TransformerLens model or its adapter.
        intervention: what to write (``None``: nothing).
        ctx: the batch's :class:`Context`, or its query positions.
        native: ``None`` picks: PyTorch hooks on the Hugging Face modules where the fast path can be taken
            (:meth:`Adapter.fast`, every write at a point with a Hugging Face module), which the adapter's
            native layer loop fires (:meth:`Adapter.run_blocks`), TransformerLens hooks otherwise. ``True``:
            the PyTorch hooks (inside :meth:`Adapter.native`, e.g. KV-cache decoding); ``False``: the
            TransformerLens hooks (any forward pass of the TransformerLens model).

    Yields:
        Whether the PyTorch hooks (the fast path) were taken.
    """
    ad, ctx = adapt(model), as_context(ctx)
    writes = intervention.writes(ad) if intervention is not None else []
    if native is None:
        native = ad.fast() and all(w.point in _NATIVE for w in writes)
    if native:
        with _native_hooks(ad, writes, ctx):
            yield True
    else:
        with ad.hooks(_tl_hooks(ad, writes, ctx)):
            yield False


def run_blocks(model, resid: Float[Tensor, "batch pos d_model"], start: int, stop: int | None = None, *,
               intervention: Intervention | None = None, ctx: Context | Tensor | int | None = None,
               prefix: PrefixKV | None = None) -> Float[Tensor, "batch pos d_model"]:
    """:meth:`Adapter.run_blocks <tvmech.core.adapter.Adapter.run_blocks>` (blocks ``start .. stop-1`` on
    ``resid``, the input of block ``start``) with ``intervention`` attached (:func:`attached` picks the path).

    Args:
        model: a TransformerLens model or its adapter.
        resid: the residual stream entering block ``start``.
        start, stop: the blocks to run (``stop=None``: to the final stream).
        intervention: what to write during the pass, or ``None``.
        ctx: the batch's :class:`Context`, or its query positions (``None``: the last token).
        prefix: frozen keys and values of the positions before ``resid``'s (fast path only).

    Returns:
        The residual stream entering block ``stop`` (the final stream, before the final norm, by default).
    """
    ad = adapt(model)
    if intervention is None:
        return ad.run_blocks(resid, start, stop, prefix=prefix)
    with attached(ad, intervention, ctx):
        return ad.run_blocks(resid, start, stop, prefix=prefix)


def residual(model, tokens: Int[Tensor, "batch pos"], layer: int, *, intervention: Intervention | None = None,
             ctx: Context | Tensor | int | None = None) -> Float[Tensor, "batch pos d_model"]:
    """:meth:`Adapter.residual <tvmech.core.adapter.Adapter.residual>` (the residual stream entering block
    ``layer``; ``n_layers``: the final stream) of ``tokens`` with ``intervention`` attached (:func:`attached`).

    Args:
        model: a TransformerLens model or its adapter.
        tokens: token ids.
        layer: the block whose input is returned.
        intervention: what to write during the pass, or ``None``.
        ctx: the batch's :class:`Context`, or its query positions (``None``: the last token).

    Returns:
        ``[batch, pos, d_model]``.
    """
    ad = adapt(model)
    if intervention is None:
        return ad.residual(tokens, layer)
    with attached(ad, intervention, ctx):
        return ad.residual(tokens, layer)


def _tl_hooks(ad: Adapter, writes: Sequence[Write], ctx: Context) -> list[tuple[str, HookFn]]:
    return [(site_name(ad, w.layer, w.point), _tl_hook(w.edit, ctx)) for w in writes]


def _tl_hook(edit: Edit, ctx: Context) -> HookFn:
    def hook(x: Tensor, hook=None) -> Tensor:
        out = edit(x, ctx)
        return x if out is None else out

    return hook


# ------------------------------------------------------------------------------------ native path
_NATIVE = {"resid_pre": ("block", "pre"), "resid_post": ("block", "post"), "attn_out": ("attn", "post"),
           "mlp_out": ("mlp", "post"), "z": ("o", "pre")}


@contextlib.contextmanager
def _native_hooks(ad: Adapter, writes: Sequence[Write], ctx: Context) -> Iterator[None]:
    """``writes`` as PyTorch hooks on the Hugging Face modules; ``ctx`` is read at every call, so its ``offset``
    may change between passes."""
    handles = []
    try:
        for w in writes:
            if w.point not in _NATIVE:
                raise ValueError(f"point {w.point!r} has no native hook; valid: {', '.join(_NATIVE)}")
            part, when = _NATIVE[w.point]
            module = ad.native_module(w.layer, part)
            if when == "pre":
                handles.append(module.register_forward_pre_hook(_pre(w, ctx, ad), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_post(w, ctx)))
        yield
    finally:
        for h in handles:
            h.remove()


def _pre(w: Write, ctx: Context, ad: Adapter):
    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if w.point == "z":  # the input of the output projection: heads' z concatenated
            out = w.edit(x.view(*x.shape[:2], ad.n_heads, ad.d_head), ctx)
            out = None if out is None else out.reshape(x.shape)
        else:
            out = w.edit(x, ctx)
        if out is None:
            return None
        if args:
            return (out, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": out}

    return hook


def _post(w: Write, ctx: Context):
    def hook(module, args, output):
        x = output[0] if isinstance(output, tuple) else output
        out = w.edit(x, ctx)
        if out is None:
            return None
        return (out, *output[1:]) if isinstance(output, tuple) else out

    return hook


__all__ = ["Edit", "Write", "Intervention", "Compose", "compose", "site_name", "as_context", "attached", "run_blocks",
           "residual"]
