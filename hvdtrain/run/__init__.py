"""A training run that survives preemption, requeues and restarts: ``hvdtrain.Run`` (run.py), its
identity and checkpoints, the stop signals, exact random state, and the metric trackers."""
