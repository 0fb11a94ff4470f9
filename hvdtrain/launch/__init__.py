"""Launching ranks: the run request (pure), the launcher argv builders, the probes, and one place that executes."""
