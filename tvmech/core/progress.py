"""Progress bars, one convention: every public call that can take more than a few seconds (training, an evaluation
over many queries, a scan over heads or layers, an experiment's ``run``) takes the keyword ``progress: bool = True``
and shows its bar through :func:`tqdm` here, ``disable=not progress``; a call nested in another's bar is passed
``progress=False`` (or its bar is ``leave=False``). ``TQDM_DISABLE=1`` in the environment turns every bar off.

tqdm's notebook widget where ``ipywidgets`` is installed, plain text bars otherwise (in a notebook without it,
``tqdm.auto`` would warn ``TqdmWarning: IProgress not found`` at every bar).
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm as _tqdm
else:
    from tqdm.std import tqdm as _tqdm


def disabled_by_env() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no bars (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def tqdm(*args, disable: bool = False, **kwargs) -> _tqdm:
    """A tqdm bar (same arguments), off where ``disable`` or ``TQDM_DISABLE`` says so (tqdm itself lets an explicit
    ``disable=False`` win over the environment)."""
    return _tqdm(*args, disable=bool(disable) or disabled_by_env(), **kwargs)


__all__ = ["tqdm", "disabled_by_env"]
