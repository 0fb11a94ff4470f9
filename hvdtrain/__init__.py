"""hvdtrain: data-parallel PyTorch training on HPC clusters with Horovod, MPI and Slurm.

Importing this package is cheap: torch and Horovod are imported only by the
modules that train (``hvdtrain.train``, the API in ``hvdtrain.api``) or inspect the
install (``hvdtrain.install.doctor``).
"""

from typing import Any

__version__ = "0.1.0"

API = ("setup", "shard", "wrap_optimizer", "is_root", "average", "Context", "Run")


def __getattr__(name: str) -> Any:
    """``hvdtrain.setup()`` and friends (hvdtrain/api.py), imported on first use."""
    if name in API:
        from hvdtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'hvdtrain' has no attribute {name!r}")
