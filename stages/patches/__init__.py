"""``atlas patches``: "human-designed adversarial patches" found on a class-comparison atlas (docs/experiments.md)."""
