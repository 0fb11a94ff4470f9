"""Training: the configuration, the step loop and its callbacks, checkpoints, and the per-rank worker."""
