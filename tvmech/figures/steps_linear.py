"""Figure steps (placeholder until filled in)."""

STEPS: dict = {}
