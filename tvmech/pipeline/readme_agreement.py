"""The README's "agreement with TransformerLens" table (``figures/tl_agreement.json``, written by
``python tools/tl_agreement.py``; the quantities are those of :mod:`tvmech.analysis.tl_agreement`), registered in
:data:`tvmech.pipeline.readme_tables.REGIONS` like the others."""

from __future__ import annotations

import math

from tvmech.pipeline.readme_tables import Rows, provenance, register, table

TOOLS = {"jlens": "J-lens", "ap": "attribution patching", "lens": "logit lens"}


def small(value) -> str:
    """A relative error: ``0``, ``2.1e-07`` below 0.01, else two decimals; ``—`` when absent."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return "0" if value == 0 else f"{value:.1e}" if abs(value) < 0.01 else f"{value:.2f}"


def _ms(value) -> str:
    return f"{1e3 * value:.2f}" if isinstance(value, (int, float)) else "—"


def _cells(r: dict, tool: str, cells: list[str]) -> list[str]:
    """``cells``, or the tool's error in the first and ``—`` in the others where it failed on this model."""
    err = r.get(f"{tool}_error")
    return [f"fails: `{err}`", *["—"] * (len(cells) - 1)] if err else cells


@register("tl_agreement", "tl_agreement")
def tl_agreement(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """One line per model and layer: the J-lens comparisons (exact Jacobian at θ = 0, then ``J(θ)`` and ``W_TV``
    around θ), Taylor scores vs attribution patching, the logit lens (readout and stack) and the readouts'
    times."""
    rows = tables["tl_agreement"]
    header = ["model", "layer", "exact J vs J-lens: one prompt / mean", "J(θ) vs J-lens", "W_TV vs J-lens",
              "cos(Wθ, J-lens θ)", "Taylor vs attribution patching", "logit lens: readout / stack",
              "lens ms: tvmech / TL"]
    body = []
    for r in rows:
        jl = _cells(r, "jlens", [f"{small(r.get('jac_one_rel'))} / {small(r.get('jac_mean_rel'))}",
                                 small(r.get("jac_theta_rel")), small(r.get("wtv_rel")),
                                 f"{r['wtv_cos']:.3f}" if isinstance(r.get("wtv_cos"), float) else "—"])
        ap = _cells(r, "ap", [small(r.get("ap_rel"))])
        ln = _cells(r, "lens", [f"{small(r.get('lens_rel'))} / {small(r.get('lens_stack_rel'))}",
                                f"{_ms(r.get('seconds_lens_tvmech'))} / {_ms(r.get('seconds_lens_tl'))}"])
        body.append([str(r.get("model")), str(r.get("layer")), *jl, *ap, *ln])
    return table(header, body) + "\n\n" + provenance("tl_agreement", rows, metas["tl_agreement"],
                                                     ("task", "prompts", "pairs"))
