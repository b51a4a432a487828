"""The one engine that writes into a forward pass.

An :class:`Intervention` is a small object that says *what* to do at which sites: its :meth:`writes` are
``(layer, point, edit)`` triples, where ``edit(x, ctx)`` takes the activation at that point and returns
the new one (or ``None`` to leave it unchanged, as a capture does). The engine turns writes into

* TransformerLens forward hooks (:meth:`Intervention.hooks`, :meth:`Intervention.apply`): the reference
  path, used by every analysis; the hook names are ``blocks.{l}.hook_resid_pre`` and friends;
* plain PyTorch module hooks on the wrapped Hugging Face model (:func:`native_hooks`), with the bridge's
  components taken out (:meth:`tvmech.core.adapter.Adapter.native`): used for KV-cache generation, where
  each pass sees only new tokens and :class:`~tvmech.interventions.sites.Context` carries their offset.

Both give the same edit the same tensor, so an intervention behaves alike on either path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tvmech.core.adapter import Adapter, HookFn, adapt
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
        """TransformerLens forward hooks for ``run_with_hooks`` / ``model.hooks``.

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

    def hooks_for(self, model) -> BatchHooks:
        """A ``Batch -> hooks`` function (each batch's own query positions), for :func:`tvmech.evaluate`; it
        carries the intervention, so that evaluation can take the fast path (:func:`attached`)."""
        return BatchHooks(self, adapt(model))

    @contextlib.contextmanager
    def apply(self, model, query_pos: Tensor | int | None = None) -> Iterator[Intervention]:
        """Context manager: every forward pass inside it carries the intervention; the hooks are removed
        on exit, also when the body raises."""
        ad = adapt(model)
        hooks = self.hooks(ad, query_pos)
        with ad.hooks(hooks):
            yield self

    @contextlib.contextmanager
    def attach(self, model, query_pos: Tensor | int | None = None) -> Iterator[bool]:
        """Context manager for tvmech's own passes (:meth:`Adapter.run_blocks`, :meth:`Adapter.residual`): the
        intervention on the fast path where it can be taken (:func:`attached`), TransformerLens hooks
        otherwise; yields which. Use :meth:`apply` around any other forward (e.g. ``model(tokens)``)."""
        with attached(model, self, Context(query_pos)) as fast:
            yield fast

    def __add__(self, other: Intervention) -> Compose:
        return Compose((self, other))


@dataclass(frozen=True)
class BatchHooks:
    """``batch -> TransformerLens hooks`` of ``intervention`` at that batch's query (and role) positions."""

    intervention: Intervention
    model: Adapter

    def __call__(self, batch: Any) -> list[tuple[str, HookFn]]:
        return self.intervention.hooks(self.model, ctx=Context.of(batch))


@contextlib.contextmanager
def attached_for(model, hooks_for: Callable[[Any], Sequence[tuple[str, HookFn]]] | None, batch: Any
                 ) -> Iterator[bool]:
    """``hooks_for``'s hooks attached for ``batch``: through :func:`attached` (fast path where possible) when it
    carries its intervention (:meth:`Intervention.hooks_for`), as TransformerLens hooks otherwise."""
    ad = adapt(model)
    if isinstance(hooks_for, BatchHooks):
        with attached(ad, hooks_for.intervention, Context.of(batch)) as fast:
            yield fast
    else:
        with ad.hooks(list(hooks_for(batch)) if hooks_for else []):
            yield False


@dataclass(frozen=True)
class Compose(Intervention):
    """Several interventions at once, applied in the order given."""

    parts: tuple[Intervention, ...]

    def writes(self, model: Adapter) -> list[Write]:
        return [w for part in self.parts for w in part.writes(model)]


def compose(parts: Sequence[Intervention]) -> Intervention:
    """One intervention made of ``parts`` (the part itself when there is one)."""
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else Compose(parts)


def _tl_hooks(ad: Adapter, writes: Sequence[Write], ctx: Context) -> list[tuple[str, HookFn]]:
    return [(site_name(ad, w.layer, w.point), _tl_hook(w.edit, ctx)) for w in writes]


def _tl_hook(edit: Edit, ctx: Context) -> HookFn:
    def hook(x: Tensor, hook=None) -> Tensor:
        out = edit(x, ctx)
        return x if out is None else out

    return hook


@contextlib.contextmanager
def attached(model, intervention: Intervention | None, ctx: Context) -> Iterator[bool]:
    """Attach ``intervention`` for the passes run inside the block, on the fast path where it can be taken.

    Fast path (:meth:`Adapter.fast`, every write at a point with a Hugging Face module): PyTorch hooks on the
    Hugging Face modules (:func:`native_hooks`), which the adapter's native layer loop fires
    (:meth:`Adapter.run_blocks`); otherwise TransformerLens hooks. Yields whether the fast path was taken.
    """
    ad = adapt(model)
    writes = intervention.writes(ad) if intervention is not None else []
    if ad.fast() and all(w.point in _NATIVE for w in writes):
        with native_hooks(ad, _Fixed(writes), ctx):
            yield True
    else:
        with ad.hooks(_tl_hooks(ad, writes, ctx)):
            yield False


@dataclass(frozen=True)
class _Fixed(Intervention):
    """Writes already made (so that an intervention's ``writes`` runs once per attachment)."""

    made: list[Write]

    def writes(self, model: Adapter) -> list[Write]:
        return self.made


# ------------------------------------------------------------------------------------ native path
_NATIVE = {"resid_pre": ("block", "pre"), "resid_post": ("block", "post"), "attn_out": ("attn", "post"),
           "mlp_out": ("mlp", "post"), "z": ("o", "pre")}


@contextlib.contextmanager
def native_hooks(model, intervention: Intervention | None, ctx: Context) -> Iterator[None]:
    """Attach ``intervention`` as PyTorch hooks on the Hugging Face modules (use inside
    :meth:`Adapter.native`); ``ctx`` is read at every call, so its ``offset`` may change between passes."""
    ad = adapt(model)
    handles = []
    try:
        for w in intervention.writes(ad) if intervention is not None else []:
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


__all__ = ["Edit", "Write", "Intervention", "BatchHooks", "Compose", "compose", "site_name", "attached", "attached_for",
           "native_hooks"]
