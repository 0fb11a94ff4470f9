"""How the bench's torch.distributed (gloo) workers end: together, and without interpreter teardown."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch.distributed as dist


def leave_and_exit() -> NoReturn:
    """Leave the process group together, then end the process at once.

    Rank 0 hosts the rendezvous store, so the ranks first meet at a barrier. Even after
    ``destroy_process_group``, a rank sometimes aborted in interpreter teardown ("terminate called
    without an active exception", exit 134; twice here, both in a DDP baseline of ``bench train``)
    after its result was written: gloo's threads do not all end with the group (pytorch issues
    28126 and 190489). A worker's results are on disk by now, so it skips teardown.
    """
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
