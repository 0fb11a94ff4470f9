"""hvdtrain: data-parallel PyTorch training on HPC clusters with Horovod, MPI and Slurm.

Importing this package is cheap: torch and Horovod are imported only by the
modules that train (``hvdtrain.train``) or inspect the install (``hvdtrain.doctor``).
"""

__version__ = "0.1.0"
