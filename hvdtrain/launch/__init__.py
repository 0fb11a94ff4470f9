"""Launching ranks: a frozen plan, pure argv builders, and one place that executes."""
