"""A plain Horovod training script, as Horovod's own examples write it, that gains preemption,
exact resume and metrics by adding `hvdtrain.Run` (the lines marked `# hvdtrain:`).

    hvdtrain run -np 2 -- python examples/horovod_script.py --epochs 5 --run-dir runs/horovod
"""

import argparse
import hashlib

import horovod.torch as hvd
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import hvdtrain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--run-dir", default="runs/horovod")
    args = parser.parse_args()

    hvd.init()  # Horovod: join the job
    torch.set_num_threads(1)
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target))
    sampler = DistributedSampler(data, num_replicas=hvd.size(), rank=hvd.rank())  # Horovod: this rank's shard
    loader = DataLoader(data, batch_size=32, sampler=sampler, drop_last=True)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * hvd.size(), momentum=0.9)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # Horovod: start from rank 0's model
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    run = hvdtrain.Run(args.run_dir, model=model, optimizer=optimizer)  # hvdtrain: resume, preemption, metrics
    for epoch in run.epochs(args.epochs):  # hvdtrain: instead of range(args.epochs)
        for x, y in run.batches(loader):  # hvdtrain: instead of `for x, y in loader`, with set_epoch
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            run.log(loss=loss)  # hvdtrain: averaged over ranks, written by rank 0
        run.save()  # hvdtrain: an epoch checkpoint
        if hvd.rank() == 0:
            print(f"epoch {epoch + 1} done", flush=True)

    params = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    print(f"rank {hvd.rank()} of {hvd.size()}: parameters {hashlib.sha256(params).hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
