"""Small validation helpers shared by the public entry points: integers (layers, positions, heads), one
or many of them, config numbers, and prompts that must fit the model's context.

Every helper raises with a message that names the argument, the bad value (with its type) and what
would be valid. Integer-like values (``numpy`` integers, 0-d integer tensors, anything with
``__index__``) are accepted and returned as plain Python ``int``; ``bool`` is refused, since
``True`` as a layer is almost always a mistake.
"""

from __future__ import annotations

import difflib
import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``; also a ``ValueError``, which the range checks raise
    for the same arguments, so that callers catching either keep working)."""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_bool(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.dtype == torch.bool
    if isinstance(value, np.ndarray):
        return value.dtype == np.bool_
    return isinstance(value, (bool, np.bool_))


def as_int(value: Any, what: str = "value") -> int:
    """``value`` as a Python ``int``: a Python int, a numpy integer, a 0-d integer tensor or anything with
    ``__index__``; ``bool`` is refused.

    Args:
        value: the candidate.
        what: how the message names it (e.g. ``"layer"``).

    Returns:
        The integer.

    Raises:
        ArgumentTypeError: ``"<what> must be an integer, got <repr> (<type>)"``.
    """
    bad = ArgumentTypeError(f"{what} must be an integer, got {_describe(value)}")
    if _is_bool(value):
        raise bad
    if isinstance(value, Tensor):
        if value.ndim != 0 or value.dtype.is_floating_point or value.dtype.is_complex:
            raise bad
        return int(value.item())
    try:
        return operator.index(value)
    except TypeError:
        raise bad from None


def as_ints(value: Any, what: str = "value") -> tuple[int, ...]:
    """One integer or a sequence of them (a list, tuple, range, 1-d integer tensor or array...) as a tuple
    of Python ints; each item is checked by :func:`as_int`.

    Args:
        value: a single integer or an iterable of integers (not a string).
        what: how the message names one item (``"layer"``, ``"position"``, ``"head"``).

    Returns:
        The integers, in order (a single integer gives a 1-tuple).

    Raises:
        ArgumentTypeError: neither an integer nor an iterable of integers, or an item that is not an integer.
    """
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"{what}s must be an integer or a sequence of integers, got {_describe(value)}")
    if getattr(value, "ndim", None) == 0 or not isinstance(value, Iterable):
        return (as_int(value, what),)
    return tuple(as_int(v, what) for v in value)


def check_int(value: Any, what: str, *, minimum: int | None = None) -> int:
    """An integer (see :func:`as_int`) that is at least ``minimum``.

    Args:
        value: the candidate.
        what: its name in the message (e.g. ``"LTVConfig.steps"``).
        minimum: the smallest valid value (``None``: no bound).

    Returns:
        The integer.

    Raises:
        ArgumentTypeError: not an integer (e.g. ``2.5`` or ``True``).
        ValueError: below ``minimum``.
    """
    n = as_int(value, what)
    if minimum is not None and n < minimum:
        raise ValueError(f"{what} must be >= {minimum} (an integer), got {value!r}")
    return n


def check_float(value: Any, what: str, *, minimum: float = -math.inf, inclusive: bool = True,
                finite: bool = True) -> float:
    """A real number (int or float, not bool), never NaN, finite unless ``finite=False`` (then ``+inf`` is
    valid), that is ``>= minimum`` (``> minimum`` when not ``inclusive``).

    Args:
        value: the candidate.
        what: its name in the message.
        minimum: the bound.
        inclusive: whether ``minimum`` itself is valid.
        finite: refuse infinities.

    Returns:
        The number as a Python ``float``.

    Raises:
        ArgumentTypeError: not a real number.
        ValueError: NaN, infinite, or out of range.
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{what} must be a number, got {_describe(value)}")
    x = float(value)
    low_ok = x >= minimum if inclusive else x > minimum
    if math.isnan(x) or (finite and math.isinf(x)) or not low_ok:
        bound = f" {'>=' if inclusive else '>'} {minimum:g}" if minimum > -math.inf else ""
        kind = "a finite number" if finite else "a number (not NaN)"
        raise ValueError(f"{what} must be {kind}{bound}, got {value!r}")
    return x


def check_bool(value: Any, what: str) -> bool:
    """``value`` if it is a ``bool`` (or a numpy bool), as a Python ``bool``.

    Raises:
        ArgumentTypeError: anything else (``0``/``1`` included).
    """
    if not _is_bool(value) or isinstance(value, Tensor):
        raise ArgumentTypeError(f"{what} must be True or False, got {_describe(value)}")
    return bool(value)


def check_choice(value: Any, what: str, valid: Sequence[Any]) -> Any:
    """``value`` if it is one of ``valid``.

    Raises:
        ValueError: naming the value and the valid choices.
    """
    if value not in valid:
        raise ValueError(f"{what} {value!r} is not valid; choose one of {tuple(valid)}")
    return value


def closest_names(name: str, valid: Sequence[str], n: int = 5) -> list[str]:
    """The ``n`` names of ``valid`` most similar to ``name`` (case-insensitive; a hub name like
    ``org/model`` is also compared by its ``model`` part), most similar first.

    Args:
        name: the unknown name.
        valid: the known names.
        n: how many to return.

    Returns:
        Up to ``n`` names, by decreasing similarity (ties: alphabetical).
    """
    key = name.lower()

    def score(v: str) -> float:
        low = v.lower()
        return max(difflib.SequenceMatcher(None, key, low).ratio(),
                   difflib.SequenceMatcher(None, key, low.rsplit("/", 1)[-1]).ratio())

    return sorted(valid, key=lambda v: (-score(v), v))[:n]


def check_fits_context(texts: Sequence[str], lengths: Sequence[int], n_ctx: int | None, *,
                       indices: Sequence[int] | None = None, what: str = "prompt") -> None:
    """Refuse prompts longer than the model's context.

    Args:
        texts: the prompts' texts.
        lengths: their token lengths (what the model would see, labels included when teacher-forced).
        n_ctx: the model's context length (``None``: unknown, nothing is checked).
        indices: each prompt's index in the caller's list (default ``0..``).
        what: how the message names a prompt.

    Raises:
        ValueError: naming the first prompt that does not fit (index, start of its text), its token
            length and the context length.
    """
    if n_ctx is None:
        return
    for j, (text, n) in enumerate(zip(texts, lengths)):
        if int(n) > n_ctx:
            i = j if indices is None else indices[j]
            start = text if len(text) <= 60 else text[:60] + "..."
            raise ValueError(f"{what} {i} ({start!r}) is {int(n)} tokens long, longer than the model's context "
                             f"of {n_ctx} tokens: shorten it or use fewer demonstrations (k)")


def as_items(value: Any, kind: type, what: str, how: str) -> Sequence[Any]:
    """``value`` if it is a sequence of ``kind`` instances (a list, tuple or any other iterable but a string),
    for the public functions that take examples or prompts.

    Args:
        value: the candidate.
        kind: the class every item must be an instance of.
        what: the argument's name in the message (``"queries"``).
        how: how to build valid items, appended to the message.

    Returns:
        ``value`` itself when it is a list or a tuple, else its items as a tuple (an iterator is read once).

    Raises:
        ArgumentTypeError: ``value`` is a string, a single ``kind`` (the message shows it wrapped in a list),
            not iterable, or holds an item of another type (the message names its index).
    """
    name = kind.__name__
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"{what} must be a list of {name} objects, got the string {value!r}: {how}")
    if isinstance(value, kind):
        raise ArgumentTypeError(f"{what} must be a list of {name} objects, got a single {name}: wrap it in a "
                                f"list, [{value!r}]")
    if not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{what} must be a list of {name} objects, got {_describe(value)}: {how}")
    items = value if isinstance(value, (list, tuple)) else tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            article = "an" if name[0] in "AEIOU" else "a"
            raise ArgumentTypeError(f"{what}[{i}] is {_describe(item)}, not {article} {name}: {how}")
    return items


__all__ = ["ArgumentTypeError", "as_items", "as_int", "as_ints", "check_int", "check_float", "check_bool",
           "check_choice", "closest_names", "check_fits_context"]
