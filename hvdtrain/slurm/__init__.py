"""Slurm: allocations as hosts, sbatch scripts (pure), and the calls to sbatch, scontrol and scancel."""
