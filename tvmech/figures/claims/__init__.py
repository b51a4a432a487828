"""README claims computed from the figures' JSON (rules and types: :mod:`tvmech.figures.claims.core`).

Importing the package registers every claim in :data:`CLAIMS` (:mod:`~tvmech.figures.claims.behaviour`,
:mod:`~tvmech.figures.claims.mechanism`, :mod:`~tvmech.figures.claims.linear`,
:mod:`~tvmech.figures.claims.synthetic`) and the table of agreement with the paper
(:mod:`~tvmech.figures.claims.paper`, a README table region).
"""

from tvmech.figures.claims import behaviour, linear, mechanism, paper, synthetic  # noqa: F401  (registers)
from tvmech.figures.claims.core import CLAIMS, Claim, ClaimResult, Est, Finding, estimate, exceeds, outside_null

__all__ = ["CLAIMS", "Claim", "ClaimResult", "Est", "Finding", "estimate", "exceeds", "outside_null"]
