"""An own training script for the tests (not ``hvdtrain train``): AdamW, a scheduler, random
augmentation drawn in a 2-worker DataLoader, dropout, and gradient accumulation, made safe with
``hvdtrain.Run``. Rank 0 prints ``digest <sha256 of the parameters>`` at the end.

    own_worker.py RUN_DIR [--epochs N] [--accumulate K] [--horovod]

``--horovod`` writes it the legacy way (``import horovod.torch as hvd``, ``hvd.init()``,
``hvd.DistributedOptimizer``) with only ``hvdtrain.Run`` added. A test holds a finished run at one
place with ``HOLD_AT=evaluate|summary|teardown``: rank 0 creates ``RUN_DIR/held`` there and waits
until the test creates ``RUN_DIR/go``.
"""

import argparse
import atexit
import hashlib
import os
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

import hvdtrain

# Workers started by a fork server, not forked from the rank: a worker forked from a rank whose
# other threads (Horovod's, the trackers') held a lock at that moment hung on it, now and then.
WORKERS = "forkserver"


class Noisy(Dataset):
    """Digits with random noise added at each draw: the augmentation comes from the worker's RNG."""

    def __init__(self):
        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32) / 16
        self.y = torch.tensor(digits.target)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index] + 0.1 * torch.randn(64), self.y[index]


def hold(run_dir: Path, place: str, rank: int) -> None:
    if os.environ.get("HOLD_AT") != place or rank != 0:
        return
    (run_dir / "held").write_text(place)
    while not (run_dir / "go").exists():
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--horovod", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    data = Noisy()
    if args.horovod:
        import horovod.torch as hvd

        hvd.init()
        torch.set_num_threads(1)  # 2 ranks on 2 cores (and no OpenMP pool to fork the data workers from)
        rank, size = hvd.rank(), hvd.size()
        sampler = DistributedSampler(data, num_replicas=size, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(data, batch_size=16, sampler=sampler, drop_last=True, num_workers=2,
                            multiprocessing_context=WORKERS)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             backward_passes_per_step=args.accumulate)
    else:
        ctx = hvdtrain.setup(device="cpu")
        rank = ctx.rank
        loader = hvdtrain.shard(data, batch_size=16, num_workers=2, multiprocessing_context=WORKERS)
        optimizer = hvdtrain.wrap_optimizer(optimizer, model, accumulate=args.accumulate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.9)

    run = hvdtrain.Run(args.run_dir, model=model, optimizer=optimizer, scheduler=scheduler, check_every=3,
                       log_every=5, best=0.0)
    for epoch in run.epochs(args.epochs):
        model.train()
        for x, y in run.batches(loader):
            loss = F.cross_entropy(model(x), y)
            (loss / args.accumulate).backward()
            if (run.batch + 1) % args.accumulate == 0:
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
            run.log(loss=loss)
        model.eval()
        if epoch == args.epochs - 1:
            hold(args.run_dir, "evaluate", rank)
        with torch.no_grad():
            accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
        run.values["best"] = max(run.values["best"], accuracy)
        run.log(accuracy=accuracy)
        run.save()
    hold(args.run_dir, "summary", rank)
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    if rank == 0:
        print(f"digest {digest} best {run.values['best']:.4f}", flush=True)
    atexit.register(hold, args.run_dir, "teardown", rank)  # after Horovod's own exit handler was registered


if __name__ == "__main__":
    main()
