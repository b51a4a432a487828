"""README claims computed from the figures' JSON (rules and types: :mod:`tvmech.pipeline.claims.core`).

Importing the package registers every claim in :data:`CLAIMS` (:mod:`~tvmech.pipeline.claims.behaviour`,
:mod:`~tvmech.pipeline.claims.robustness`, :mod:`~tvmech.pipeline.claims.mechanism`,
:mod:`~tvmech.pipeline.claims.linear`, :mod:`~tvmech.pipeline.claims.emergence`) and the table of agreement with the
paper (:mod:`~tvmech.pipeline.claims.paper`, a README table region).
"""

from tvmech.pipeline.claims import (  # noqa: F401  (registers)
    behaviour,
    emergence,
    linear,
    mechanism,
    methods,
    paper,
    robustness,
)
from tvmech.pipeline.claims.core import CLAIMS, Claim, ClaimResult, Est, Finding, estimate, exceeds, outside_null

__all__ = ["CLAIMS", "Claim", "ClaimResult", "Est", "Finding", "estimate", "exceeds", "outside_null"]
