"""Writes the fixtures of tests/unit/interventions/test_control_vectors.py with the producers' own code:
repeng 0.4.0 (``ControlVector.export_gguf``) and steering-vectors 0.12.2 (``SteeringVector``; it has no save
method, so its ``layer_activations`` are saved with ``torch.save`` and with safetensors).

Run once, where both are importable (they were installed with ``pip install --no-deps --target``; repeng 0.4.0
needs ``np.float_``, removed in NumPy 2, so it is aliased before the import). The values are the test's
``expected()``: float32 normal draws from ``numpy.random.default_rng(0)`` for blocks 1 and 2 of the tiny
test model (d_model 64)."""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

np.float_ = np.float64  # repeng 0.4.0 names it at import; it is not used by export_gguf
from repeng import ControlVector  # noqa: E402
from steering_vectors import SteeringVector  # noqa: E402

HERE = Path(__file__).parent
rng = np.random.default_rng(0)
dirs = {layer: rng.standard_normal(64).astype(np.float32) for layer in (1, 2)}
ControlVector(model_type="llama", directions=dirs).export_gguf(str(HERE / "repeng-0.4.0.gguf"))
sv = SteeringVector({layer: torch.from_numpy(v) for layer, v in dirs.items()}, layer_type="decoder_block")
torch.save(sv.layer_activations, HERE / "steering-vectors-0.12.2.pt")
save_file({str(k): v for k, v in sv.layer_activations.items()}, HERE / "steering-vectors-0.12.2.safetensors",
          metadata={"layer_type": sv.layer_type})
