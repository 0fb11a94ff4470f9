"""An ordinary PyTorch training script made data-parallel and preemption-safe with hvdtrain's API.

The lines marked `# hvdtrain:` are the whole change. Run it on 2 ranks with:

    hvdtrain run -np 2 -- python examples/own_script.py --epochs 5 --run-dir runs/own

Send `kill -USR1` to `hvdtrain run` (or let Slurm do it before the time limit): every rank stops at
the same step, rank 0 saves it, the job exits 75. Run the same command again: it resumes from that
step and ends with exactly the parameters of a run that was never stopped.
"""

import argparse
import hashlib

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import hvdtrain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--run-dir", default="runs/own")
    args = parser.parse_args()

    ctx = hvdtrain.setup()  # hvdtrain: join the job, catch the stop signals, pick threads and device
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target))
    loader = hvdtrain.shard(data, batch_size=32)  # hvdtrain: this rank's shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr * ctx.size)
    optimizer = hvdtrain.wrap_optimizer(optimizer, model)  # hvdtrain: all-reduce gradients
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(loader))

    # hvdtrain: checkpoints, preemption, exact resume and metrics; resumes where the last run stopped.
    run = hvdtrain.Run(args.run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    for epoch in run.epochs(args.epochs):
        correct = total = 0
        for x, y in run.batches(loader):  # hvdtrain: set_epoch, skip what was done, stop on a signal
            x, y = x.to(ctx.device), y.to(ctx.device)
            optimizer.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.log(loss=loss)  # hvdtrain: averaged over ranks; rank 0 writes metrics.jsonl
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        accuracy = hvdtrain.average(correct / max(total, 1))
        run.log(train_accuracy=accuracy)
        run.save()  # hvdtrain: an epoch checkpoint (rank 0 writes it, atomically)
        if hvdtrain.is_root():  # hvdtrain: print on rank 0 only
            print(f"epoch {epoch + 1}: train accuracy {accuracy:.3f}", flush=True)

    params = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
    print(f"rank {ctx.rank} of {ctx.size}: parameters {hashlib.sha256(params).hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
