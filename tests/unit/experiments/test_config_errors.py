"""Library errors name a config's fields, never command-line flags; the command line maps them to flags
(:func:`tvmech.experiments.common.with_flags`)."""

import ast
import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import tvmech.experiments
from tvmech.experiments import icl, key_heads, layer_sweep, linear_map, ov_reconstruction, sinks
from tvmech.experiments.common import ExperimentConfig, flag_of, with_flags

PACKAGE = Path(__file__).resolve().parents[3] / "tvmech"
# the layers below the command line: what they raise is read by library users
LIBRARY = ("core", "data", "interventions", "analysis", "methods", "synthetic", "experiments")
FLAG = re.compile(r"(^|[\s(/])--[a-z]")  # a flag in a message


@pytest.mark.parametrize("cls, kwargs, message, flagged", [
    (ov_reconstruction.Config, {"alphas": (0.0,)}, "mechanism alphas (0.0,) is not valid", "--mech-alphas (0.0,)"),
    (key_heads.Config, {"frac": 2.0}, "mechanism frac 2.0 is not valid", "--key-frac 2.0 is not valid"),
    (key_heads.Config, {"n_random": 0}, "mechanism n_score 32 / mechanism n_random 0: both must be >= 1",
     "--mech-n-score 32 / --n-random 0: both"),
    (key_heads.Config, {"exact": ("half",)}, "mechanism exact ['half'] is not valid", "--exact-kinds ['half']"),
    (sinks.Config, {"threshold": 1.5}, "mechanism threshold 1.5 is not valid", "--sink-threshold 1.5"),
    (linear_map.Config, {"map_null_prompts": 0}, "linear map_null_prompts 0 is not valid",
     "--map-null-prompts 0 is not valid"),
    (linear_map.Config, {"map_null": 0}, "linear map_null 0 is not valid", "--map-null 0 is not valid"),
    (layer_sweep.Config, {"scorings": ("argmax",)}, "sweep scorings ['argmax'] is not valid",
     "--sweep-scorings ['argmax']"),
    (icl.Config, {"ks": (-1,)}, "icl ks (-1,) is not valid", "--icl-ks (-1,) is not valid"),
])
def test_a_config_error_names_the_field_and_the_command_line_names_the_flag(cls, kwargs, message, flagged):
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    text = str(err.value)
    assert message in text and not FLAG.search(text)
    assert flagged in with_flags(cls, text)


def test_with_flags_prefers_the_flag_given_and_leaves_other_messages_alone():
    assert with_flags(icl.Config, "icl n_test 0 is not valid", {"n_test": "--n-test"}) == "--n-test 0 is not valid"
    assert with_flags(icl.Config, "icl n_test 0 is not valid") == "--icl-n-test 0 is not valid"
    assert with_flags(icl.Config, "the hub is out of reach") == "the hub is out of reach"
    # a field name inside another word or after another label is not a field
    assert with_flags(icl.Config, "sweep ks (1,) / icl ksx") == "sweep ks (1,) / icl ksx"


def _flags() -> set[str]:
    """Every flag the command line makes of the experiments' configs, and its common flags."""
    flags = {"--tasks", "--n-test", "--seed", "--seeds", "--ltv-steps"}
    for info in pkgutil.iter_modules(tvmech.experiments.__path__):
        cls = getattr(importlib.import_module(f"tvmech.experiments.{info.name}"), "Config", None)
        if isinstance(cls, type) and issubclass(cls, ExperimentConfig):
            flags |= {flag_of(cls, f) for f in dataclasses.fields(cls)}
    return flags


def _raised_text(source: str):
    """(line, source) of every ``raise`` and every ``check_*(...)`` call (whose argument names the value)."""
    for node in ast.walk(ast.parse(source)):
        call = isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))
        if isinstance(node, ast.Raise) or (call and call.startswith("check_")):
            yield node.lineno, ast.get_source_segment(source, node)


def test_no_library_error_names_a_command_line_flag():
    flags = _flags()
    assert {"--mech-alphas", "--key-frac", "--map-null", "--sweep-scorings"} <= flags
    found = []
    for layer in LIBRARY:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for line, text in _raised_text(path.read_text(encoding="utf-8")):
                named = set(re.findall(r"--[a-z][a-z-]*", text)) & flags
                if named:
                    found.append(f"{path.relative_to(PACKAGE)}:{line}: {sorted(named)}")
    assert not found, found
