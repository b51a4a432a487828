"""README table "Agreement with the paper": each headline result of Yang et al. (ICLR 2026, "Task Vectors,
Learned Not Extracted"), the paper's Llama-3.1-8B number, and tvmech's claim for it on each model, evaluated on
that model's JSON (numbers and verdict from :data:`tvmech.pipeline.claims.CLAIMS`).

The table is a README table region (``<!-- table: paper_agreement -->``). A model's cell joins the headlines of
the claims listed for it (each on a figures subfolder); its verdict is their conjunction
(:func:`~tvmech.pipeline.claims.core.all_of`). The Llama-3.1-8B column says "see paper": a number goes there only
when it has been read in the paper's own text (arXiv 2509.24169) or the authors' repository, cited by version
(v1/v2/v3) and section, table or figure. None has been so far (the stored copies reached only the abstract; the
authors' repository HLYang2001/Learned_TV was not available); numbers from third-party summaries of the paper are
not used.
"""

from __future__ import annotations

from dataclasses import dataclass

# the modules that register the claims this table reads
from tvmech.pipeline.claims import behaviour, emergence, linear, mechanism, robustness  # noqa: F401
from tvmech.pipeline.claims.core import CLAIMS, Metas, Tables, all_of
from tvmech.pipeline.readme_tables import register, table


@dataclass(frozen=True)
class PaperResult:
    """A headline result of the paper and, per model, the ``(claim, subfolder, label)`` that test it here."""

    result: str
    llama: str
    smollm2: tuple[tuple[str, str, str], ...]
    gemma3: tuple[tuple[str, str, str], ...]


SEE = "see paper"
MODELS = (("smollm2", "", "SmolLM2-135M (figures/)"), ("gemma3", "gemma3", "Gemma-3-270M (figures/gemma3/)"))
RESULTS = (
    PaperResult("LTVs beat extracted vectors (Vanilla TV, FV) across layers", SEE,
                (("ltv_beats_extracted", "sweep_layer15", "3 seeds"),
                 ("ltv_beats_extracted", "", "all layers, seed 0")),
                (("ltv_beats_extracted", "gemma3", "all layers, seed 0"),)),
    PaperResult("LTVs work at any layer and position", SEE,
                (("ltv_any_site", "", "sweep seed 0, robustness 3 seeds"),
                 ("robustness_extracted", "", "against Vanilla TV and FV at the same sites, 3 seeds")),
                (("ltv_any_site", "gemma3", "sweep, seed 0"),)),
    PaperResult("The TV acts through attention heads' OV circuits (its packaged OV effect reconstructs it)", SEE,
                (("ov_direct", "", "full vocabulary"),), (("ov_direct", "gemma3", "full vocabulary"),)),
    PaperResult("Key heads: ablating them hurts more than ablating random heads", SEE,
                (("key_heads_vs_random", "", "own scoring"),), (("key_heads_vs_random", "gemma3", "own scoring"),)),
    PaperResult("W_TV rotates θ in early layers and scales it in late layers (a property of task vectors)", SEE,
                (("rotation_scaling", "", ""),), (("rotation_scaling", "gemma3", ""),)),
    PaperResult("The rotation turns θ toward the label directions", SEE,
                (("rotation_alignment", "", "vs random rotations"),),
                (("rotation_alignment", "gemma3", "vs random rotations"),)),
    PaperResult("The reconstructed Wθ decodes to the task's labels", SEE,
                (("wtheta_final", "", "accuracy of Wθ at the final stream"),),
                (("wtheta_final", "gemma3", "accuracy of Wθ at the final stream"),)),
)


def _stem(spec: str, sub: str) -> str:
    """A claim's file spec as seen from the figures root: ``stem@sub`` (``?`` kept)."""
    optional = "?" if spec.endswith("?") else ""
    stem = spec.rstrip("?")
    return (f"{stem}@{sub}" if sub and "@" not in stem else stem) + optional


def _uses() -> list[tuple[str, str]]:
    return list(dict.fromkeys((name, sub) for r in RESULTS for key, _, _ in MODELS
                              for name, sub, _ in getattr(r, key)))


FILES = tuple(dict.fromkeys(_stem(f, sub) for name, sub in _uses() for f in CLAIMS[name].files))


def evaluate(name: str, sub: str, tables: Tables, metas: Metas):
    """Claim ``name`` on the JSON of ``figures/sub`` (the region's tables re-keyed to plain stems)."""
    spec = CLAIMS[name]
    keys = {f.rstrip("?"): _stem(f, sub).rstrip("?") for f in spec.files}
    return spec({k: tables[v] for k, v in keys.items() if v in tables},
                {k: metas[v] for k, v in keys.items() if v in metas})


@register("paper_agreement", *FILES)
def paper_agreement(tables: Tables, metas: Metas) -> str:
    """One row per headline result: the paper's number and, per model, tvmech's headline numbers and verdict."""
    body = []
    for r in RESULTS:
        line = [r.result, r.llama]
        for key, _, _ in MODELS:
            results = [(evaluate(name, sub, tables, metas), label) for name, sub, label in getattr(r, key)]
            line.append("; ".join((res.headline or "—") + (f" ({label})" if label else "") for res, label in results))
            line.append(f"**{all_of([res.verdict for res, _ in results])}**")
        body.append(line)
    header = ["paper's result (Yang et al., ICLR 2026)", "Llama-3.1-8B (paper)"]
    for _, _, label in MODELS:
        header += [label, "verdict"]
    paths = ", ".join(f"figures/{'/'.join(reversed(s.split('@')))}.json" for s in tables)
    return (table(header, body) + f"\n\n*{paths} — mean ± sd over run seeds where there are several; verdicts by "
            "the rules of `tvmech.pipeline.claims.core`*")
