"""The steps of the pipeline, one module each (``*_step.py``), each registering itself
(:func:`tvmech.pipeline.registry.register`) when imported. Importing this package imports every module in it;
:data:`STEPS` holds the steps in their order.
"""

import importlib
import pkgutil

from tvmech.pipeline.registry import Step, registered

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

STEPS: dict[str, Step] = registered()

__all__ = ["STEPS"]
