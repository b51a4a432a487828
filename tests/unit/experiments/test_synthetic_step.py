"""The synthetic step trains, saves, then redraws without training."""

import pytest

from tvmech.experiments import synthetic
from tvmech.pipeline import cli


def test_figures_step_trains_saves_and_then_redraws_without_training(tmp_path, monkeypatch):
    tiny = {"tasks": {"offset": {"n_values": 8, "n_offsets": 4}},
            "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "tvp_weight": 1.0, "tvp_layer": 1, "n_demos": 2,
                      "log_every": 2}, "n_eval": 8, "ltv_steps": 2}
    monkeypatch.setitem(synthetic.PRESETS, "quick", tiny)
    monkeypatch.setenv("TVMECH_CACHE", str(tmp_path / "cache"))
    argv = ["--out", str(tmp_path), "--only", "synthetic", "--synthetic-preset", "quick", "--no-png"]
    assert cli.main(argv) == 0
    names = sorted(p.name for p in tmp_path.glob("synthetic_offset_*.json"))
    assert names == [f"synthetic_offset_{f}.json" for f in sorted(synthetic.FIGURES)]
    assert (tmp_path / "synthetic" / "quick" / "offset" / "tvp" / "model.safetensors").is_file()

    def no_training(*a, **k):
        raise AssertionError("saved models and numbers should be reused")

    monkeypatch.setattr(synthetic, "train", no_training)
    assert cli.main(argv) == 0  # redraw only
    with pytest.raises(AssertionError, match="should be reused"):
        cli.main(argv + ["--force"])
