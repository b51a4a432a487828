"""The robustness figure and README table: the committed one-seed LTV-only format still renders as before; the
new rows (methods, sites, seeds, undefined roles) give one bar per method, mean ± sd, and say over how many tasks."""

from tvmech.pipeline.readme_tables import REGIONS
from tvmech.plots import behaviour_plots as plots

OLD = [{"task": t, "configuration": c, "accuracy": a, "n": 4, "n_vectors": 1} for t, a0 in (("a", 0.5), ("b", 0.7))
       for c, a in (("layer 15, last position", a0), ("layer 15, 4th token", a0 - 0.1))]


def _new(seed: int) -> list[dict]:
    rows = []
    for t in ("a", "b"):
        for name, positions, methods in (("layer 1, query", ["query"], ("ltv", "vanilla", "fv")),
                                         ("layer 1, token before the input", ["before_input"], ("ltv", "vanilla")),
                                         ("every 2nd layer, last 5 tokens", [-5, -4, -3, -2, -1], ("ltv",))):
            for m in methods:
                undefined = t == "b" and positions == ["before_input"]
                rows.append({"task": t, "configuration": name, "method": m, "run_seed": seed,
                             "layers": [0, 2, 4] if name.startswith("every") else [1], "positions": positions, "k": 0,
                             "accuracy": None if undefined else 0.1 * seed + {"ltv": 0.6, "vanilla": 0.3, "fv": 0.2}[m],
                             "n": None if undefined else 4})
    return rows


META = {"robustness": {"settings": {"seed": 0, "model": "m", "ltv_steps": 3, "k": 5}, "device": "cpu",
                       "date": "today"}}


def test_the_one_seed_ltv_format_renders_as_before():
    text = REGIONS["robustness"].build({"robustness": OLD}, META)
    lines = text.splitlines()
    assert lines[0] == "| configuration | mean over 2 tasks | a | b |"
    assert lines[2] == "| layer 15, last position | 0.60 | 0.50 | 0.70 |"
    fig = plots.robustness_figure(OLD)
    assert [t.name for t in fig.data] == ["LTV"] and list(fig.data[0].y) == [0.6, 0.5]


def test_methods_sites_seeds_and_undefined_roles():
    rows = _new(0) + _new(1) + _new(2)
    text = REGIONS["robustness"].build({"robustness": rows}, META)
    lines = text.splitlines()
    assert lines[0] == "| configuration | layers | positions | k | LTV | Vanilla TV | Function vector |"
    assert lines[2] == "| layer 1, query | 1 | query | 0 | 0.70 ± 0.10 | 0.40 ± 0.10 | 0.30 ± 0.10 |"
    assert lines[3] == ("| layer 1, token before the input | 1 | before_input | 0 | 0.70 ± 0.10 (1 of 2 tasks) | "
                        "0.40 ± 0.10 (1 of 2 tasks) | — |")
    assert lines[4] == "| every 2nd layer, last 5 tokens | 0, 2, …, 4 | -5..-1 | 0 | 0.70 ± 0.10 | — | — |"
    assert "| configuration | LTV, mean over 2 tasks | a | b |" in lines
    assert "| layer 1, token before the input | 0.70 ± 0.10 | 0.70 ± 0.10 | — |" in lines
    assert "seeds 0, 1, 2" in lines[-1]
    fig = plots.robustness_figure(rows)
    assert [t.name for t in fig.data] == ["LTV", "Vanilla TV", "Function vector"]
    assert list(fig.data[2].x) == ["layer 1, query"]
    assert abs(fig.data[0].error_y.array[0] - 0.1) < 1e-9
    assert fig.data[0].customdata[1].startswith("over 1 of 2 tasks")
