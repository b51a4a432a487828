"""What a figure's JSON records besides its rows: the settings, the device and the date of the run."""

from __future__ import annotations

import time

import torch


def describe_device(device: str) -> str:
    """``'cpu'``, or the accelerator's name with the torch device, e.g. ``'NVIDIA H100 80GB HBM3 (cuda)'``."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    return str(device)


def meta(device: str, settings: dict) -> dict:
    """The ``meta`` of a figure's JSON.

    Args:
        device: the torch device the numbers were computed on.
        settings: the experiment's settings (see ``Config.settings``), with the model's name.

    Returns:
        ``{"settings", "device", "date"}``.
    """
    return {"settings": settings, "device": describe_device(device), "date": time.strftime("%Y-%m-%d")}
