"""Progress bars: tqdm's notebook widget where ``ipywidgets`` is installed, plain text bars otherwise (in a
notebook without it, ``tqdm.auto`` would warn ``TqdmWarning: IProgress not found`` at every bar)."""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
