"""README.md's results tables are generated from figures/*.json: the committed README agrees with the committed
JSON, and the generator aggregates run seeds, shows both scorings, rewrites only its regions and reports errors."""

import json
from pathlib import Path

import pytest

from tvmech.pipeline import readme
from tvmech.pipeline.readme_tables import REGIONS, aggregate, scoring_views

ROOT = Path(__file__).resolve().parents[3]


def test_committed_readme_agrees_with_committed_figures():
    diffs = readme.check(ROOT / "README.md", ROOT / "figures")
    assert not diffs, "README tables differ from figures/*.json; run python -m tvmech.pipeline.readme\n" + "".join(
        diffs.values())


def _write(folder: Path, stem: str, rows: list[dict], meta: dict | None = None) -> None:
    meta = meta or {"settings": {"seed": 0, "model": "tiny"}, "device": "cpu", "date": "2026-01-02"}
    (folder / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def _icl_rows(accuracy=None) -> list[dict]:
    """Two run seeds; ``sentiment`` scored both ways, ``antonym`` first-token only."""
    acc = accuracy or {(0, "antonym", "first_token", 0): 0.1, (1, "antonym", "first_token", 0): 0.3,
                       (0, "sentiment", "label_set", 0): 0.9, (1, "sentiment", "label_set", 0): 0.7,
                       (0, "sentiment", "first_token", 0): 0.5, (1, "sentiment", "first_token", 0): 0.1}
    return [{"task": t, "k": k, "scoring": s, "accuracy": a, "n": 10, "run_seed": seed}
            for (seed, t, s, k), a in acc.items()]


def test_aggregate_averages_tasks_within_a_run_seed_then_gives_mean_and_sd_over_run_seeds():
    rows = [{"task": t, "run_seed": seed, "accuracy": a}
            for seed, t, a in [(0, "a", 0.2), (0, "b", 0.4), (1, "a", 0.6), (1, "b", 0.8), (2, "a", 1.0),
                               (2, "b", 1.0)]]
    mean = aggregate(rows, (), "accuracy")[()]
    assert mean.mean == pytest.approx(2 / 3)  # per seed 0.3, 0.7, 1.0
    assert mean.sd == pytest.approx(0.35119, abs=1e-5)  # sample sd of 0.3, 0.7, 1.0
    per_task = aggregate(rows, ("task",), "accuracy")
    assert per_task[("a",)].fmt(2) == "0.60 ± 0.40"
    assert aggregate([r for r in rows if r["run_seed"] == 0], ("task",), "accuracy")[("a",)].fmt(2) == "0.20"


def test_icl_table_shows_mean_sd_over_run_seeds_and_both_scorings(tmp_path):
    _write(tmp_path, "icl_accuracy", _icl_rows())
    text = readme.render("icl", tmp_path)
    assert "| sentiment | 10 | label_set | 0.80 ± 0.14 |" in text
    assert "| sentiment | 10 | first_token | 0.30 ± 0.28 |" in text
    assert "| antonym | 10 | first_token | 0.20 ± 0.14 |" in text
    # mean over tasks once per scoring of the doubly scored task: seeds (0.1+0.9)/2, (0.3+0.7)/2 -> 0.50 ± 0.00
    assert "| **mean** (own scoring) |  |  | **0.50 ± 0.00** |" in text
    assert "| **mean** (full vocabulary) |  |  | **0.25 ± 0.07** |" in text  # (0.1+0.5)/2, (0.3+0.1)/2
    assert text.rstrip().endswith("*figures/icl_accuracy.json — cpu, 2026-01-02, seeds 0, 1, model tiny*")
    views = dict(scoring_views(_icl_rows()))
    assert {r["scoring"] for r in views["label_set"] if r["task"] == "sentiment"} == {"label_set"}
    assert len([r for r in views["label_set"] if r["task"] == "antonym"]) == 2


def test_single_run_gives_plain_numbers_and_the_meta_seed(tmp_path):
    rows = [{"task": "antonym", "k": k, "accuracy": a, "n": 5, "scoring": "first_token"}
            for k, a in [(0, 0.0), (5, 0.6)]]
    _write(tmp_path, "icl_accuracy", rows)
    text = readme.render("icl", tmp_path)
    assert "| antonym | 5 | first_token | 0.00 | 0.60 |" in text
    assert "±" not in text and "seed 0" in text


README = """# title\r\n\nprose with 0.17  trailing spaces  \n<!-- table: icl -->\nold table\n<!-- /table -->\ntail\n"""


def test_update_rewrites_only_the_region_and_leaves_an_agreeing_file_untouched(tmp_path):
    _write(tmp_path, "icl_accuracy", _icl_rows())
    path = tmp_path / "README.md"
    path.write_bytes(README.encode())
    assert readme.update(path, tmp_path) == ["icl"]
    new = path.read_bytes().decode()
    head, tail = README.split("<!-- table: icl -->")[0], README.split("<!-- /table -->")[1]
    assert new.startswith(head + "<!-- table: icl -->\n\n| task |") and new.endswith("<!-- /table -->" + tail)
    assert new.count("\r\n") == 1 and "old table" not in new
    mtime = path.stat().st_mtime_ns
    assert readme.update(path, tmp_path) == [] and path.stat().st_mtime_ns == mtime
    assert readme.check(path, tmp_path) == {}


def test_check_detects_a_changed_number_and_the_cli_exits_1_with_the_diff(tmp_path, capsys):
    _write(tmp_path, "icl_accuracy", _icl_rows())
    path = tmp_path / "README.md"
    path.write_text(README)
    readme.update(path, tmp_path)
    assert readme.main(["--check", "--readme", str(path), "--figures", str(tmp_path)]) == 0
    changed = _icl_rows()
    changed[0]["accuracy"] = 0.5  # antonym seed 0: 0.20 ± 0.14 -> 0.40 ± 0.14
    _write(tmp_path, "icl_accuracy", changed)
    diffs = readme.check(path, tmp_path)
    assert list(diffs) == ["icl"]
    assert "-| antonym | 10 | first_token | 0.20 ± 0.14 |" in diffs["icl"]
    assert "+| antonym | 10 | first_token | 0.40 ± 0.14 |" in diffs["icl"]
    before = path.read_bytes()
    assert readme.main(["--check", "--readme", str(path), "--figures", str(tmp_path)]) == 1
    assert "+| antonym | 10 | first_token | 0.40 ± 0.14 |" in capsys.readouterr().out
    assert path.read_bytes() == before  # --check never writes


def test_missing_json_names_the_file_and_unknown_regions_list_the_known_ones(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    with pytest.raises(readme.ReadmeError, match=r"'icl' needs .*icl_accuracy\.json"):
        readme.check(path, tmp_path)
    path.write_text("<!-- table: nosuch -->\n<!-- /table -->\n")
    with pytest.raises(readme.ReadmeError, match="unknown README table region 'nosuch'") as err:
        readme.check(path, tmp_path)
    assert all(name in str(err.value) for name in REGIONS)
    path.write_text("<!-- table: icl -->\nno end\n")
    with pytest.raises(readme.ReadmeError, match="unbalanced"):
        readme.check(path, tmp_path)


def test_ov_alpha_variants_get_their_own_table_and_key_head_set_index_is_not_a_run_seed(tmp_path):
    ov = [{"task": t, "method": m, "accuracy": a, "effect_norm": 2.0}
          for t in ("a", "b") for m, a in [("ltv", 0.7), ("ov_direct", 0.2), ("ov_direct@4", 0.4 if t == "a" else 0.6)]]
    _write(tmp_path, "ov_reconstruction", ov)
    text = readme.render("ov_reconstruction", tmp_path)
    assert "| `ltv` | 0.700 | 2.0 |" in text and "`ov_direct@4` |" not in text
    assert "| `ov_direct` | 0.200 | 0.500 |" in text and "| method (own scoring) | α=1 | α=4 |" in text
    ablation = [{"task": "a", "set": s, "kind": k, "seed": seed, "accuracy": a}
                for s, k, seed, a in [("none", "none", None, 0.9), ("key", "zero", None, 0.1),
                                      ("random", "zero", 0, 0.6), ("random", "zero", 1, 0.8)]]
    _write(tmp_path, "key_heads_ablation", ablation)
    _write(tmp_path, "key_heads_taylor", [{"task": "a", "spearman": 0.5, "precision_at_k": 0.25, "k_precision": 4}])
    text = readme.render("key_heads", tmp_path)
    assert "| zero ablation (z = 0) | 0.100 | 0.700 (sd over 2 sets 0.141) |" in text  # sets averaged, no run-seed ±
    assert "| **mean** | **0.50** | **0.25** |" in text and "P@4" in text


def test_a_region_with_at_reads_a_subfolder_and_names_it(tmp_path):
    from tvmech.pipeline import readme

    sub = tmp_path / "other"
    sub.mkdir()
    rows = [{"task": "a", "k": k, "accuracy": a, "n": 4, "scoring": "first_token"} for k, a in ((0, 0.1), (5, 0.9))]
    (sub / "icl_accuracy.json").write_text(json.dumps({"meta": {"device": "gpu-y", "date": "d"}, "rows": rows}))
    text = "x\n<!-- table: icl@other -->\n<!-- /table -->\ny\n"
    new, diffs = readme.regenerate(text, tmp_path)
    assert "0.90" in new and "*figures/other/icl_accuracy.json — gpu-y" in new and list(diffs) == ["icl@other"]
    with pytest.raises(readme.ReadmeError, match="needs"):
        readme.regenerate(text.replace("@other", "@missing"), tmp_path)


def test_every_region_builds_from_the_committed_json_and_ends_with_its_provenance():
    for name, region in REGIONS.items():
        text = readme.render(name, ROOT / "figures").strip()
        last = region.files[-1].rstrip("?").split("@")
        assert text.splitlines()[-1].startswith("*figures/"), name
        assert f"figures/{'/'.join(reversed(last))}.json" in text.splitlines()[-1], name


CLAIM_README = ("# t\n\n- **Word tasks**: <!-- claim: icl_word_tasks -->old sentence<!-- /claim --> tail text\n"
                "<!-- table: icl -->\n<!-- /table -->\n")


def _icl_k5() -> list[dict]:
    return _icl_rows() + [{**r, "k": 5, "accuracy": 0.9} for r in _icl_rows() if r["task"] == "antonym"]


def test_a_claim_region_is_rendered_inline_and_a_hand_edit_fails_the_check(tmp_path, capsys):
    _write(tmp_path, "icl_accuracy", _icl_k5())
    path = tmp_path / "README.md"
    path.write_text(CLAIM_README)
    assert readme.update(path, tmp_path) == ["claim:icl_word_tasks", "icl"]
    text = path.read_text()
    line = next(x for x in text.splitlines() if x.startswith("- **Word tasks**"))
    assert line.startswith("- **Word tasks**: <!-- claim: icl_word_tasks -->**Demonstrations lift the word tasks")
    assert line.endswith("<!-- /claim --> tail text") and "old sentence" not in text
    assert readme.main(["--check", "--readme", str(path), "--figures", str(tmp_path)]) == 0
    path.write_text(text.replace(": holds.**", ": does not hold.**"))  # a verdict edited by hand
    assert list(readme.check(path, tmp_path)) == ["claim:icl_word_tasks"]
    assert readme.main(["--check", "--readme", str(path), "--figures", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-- **Word tasks**" not in out and ": does not hold.**" in out and ": holds.**" in out


def test_claim_regions_at_a_subfolder_and_bad_claim_markers_are_refused(tmp_path):
    sub = tmp_path / "other"
    sub.mkdir()
    _write(sub, "icl_accuracy", _icl_k5())
    new, diffs = readme.regenerate("x: <!-- claim: icl_word_tasks@other --><!-- /claim -->\n", tmp_path)
    assert list(diffs) == ["claim:icl_word_tasks@other"] and "Demonstrations lift" in new
    with pytest.raises(readme.ReadmeError, match="unknown README claim region 'nosuch'"):
        readme.regenerate("x: <!-- claim: nosuch --><!-- /claim -->\n", tmp_path)
    with pytest.raises(readme.ReadmeError, match="unbalanced claim markers"):
        readme.regenerate("x: <!-- claim: icl_word_tasks@other -->\n", tmp_path)
    for start in ("", "- ", "  ", "1. "):
        with pytest.raises(readme.ReadmeError, match="line 2: .* starts the line"):
            readme.regenerate(f"x\n{start}<!-- claim: icl_word_tasks@other --><!-- /claim -->\n", tmp_path)


def test_load_json_reads_subfolder_stems_and_skips_missing_optional_ones(tmp_path):
    sub = tmp_path / "m2"
    sub.mkdir()
    _write(sub, "icl_accuracy", _icl_rows())
    tables, _ = readme.load_json(tmp_path, ["icl_accuracy@m2", "robustness?"], "r", tmp_path)
    assert list(tables) == ["icl_accuracy@m2"] and len(tables["icl_accuracy@m2"]) == 6
    with pytest.raises(readme.ReadmeError, match="'r' needs .*robustness.json"):
        readme.load_json(tmp_path, ["robustness"], "r", tmp_path)
