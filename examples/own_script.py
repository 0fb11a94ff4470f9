"""An ordinary PyTorch training script made data-parallel with hvdtrain's API.

The lines marked `# hvdtrain:` are the whole change. Run it on 2 ranks with:

    hvdtrain run -np 2 -- python examples/own_script.py --epochs 5
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
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    ctx = hvdtrain.setup()  # hvdtrain: join the job, pick threads and device
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target))
    loader = hvdtrain.shard(data, batch_size=32)  # hvdtrain: this rank's shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * ctx.size, momentum=0.9)
    optimizer = hvdtrain.wrap_optimizer(optimizer, model)  # hvdtrain: all-reduce gradients

    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)  # hvdtrain: a new shuffle each epoch, the same on all ranks
        correct = total = 0
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x.to(ctx.device))
            loss = F.cross_entropy(logits, y.to(ctx.device))
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        accuracy = hvdtrain.average(correct / total)
        if hvdtrain.is_root():  # hvdtrain: log on rank 0 only
            print(f"epoch {epoch + 1}: train accuracy {accuracy:.3f}", flush=True)

    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    print(f"rank {ctx.rank} of {ctx.size}: parameters {digest}", flush=True)


if __name__ == "__main__":
    main()
