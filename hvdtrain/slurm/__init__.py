"""Slurm: allocations to hosts (and, later, sbatch scripts, submission and requeue)."""
