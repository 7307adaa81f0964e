"""Push: rule sets and their pure evaluation (rules.py, evaluator.py), and notification counts."""
