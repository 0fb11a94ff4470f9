"""One rank of a job that wraps its optimizer before moving its model (``model.to(torch.float64)``
takes the same ``Module._apply`` path as ``model.to("cuda")``), and again in the usual order; writes
both models' parameters and what their gradients are to OUT/wrap-order.rankN.json."""

import json
import sys
from pathlib import Path

import torch

import hvdtrain


def train(ctx: hvdtrain.Context, wrap_first: bool) -> dict[str, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if wrap_first:
        optimizer = hvdtrain.wrap_optimizer(optimizer, model, bucket_mb=0.0005)  # two buckets
        model.to(torch.float64)
    else:
        model.to(torch.float64)
        optimizer = hvdtrain.wrap_optimizer(optimizer, model, bucket_mb=0.0005)
    data = torch.Generator().manual_seed(1 + ctx.rank)  # each rank its own batches
    for _ in range(6):
        x = torch.randn(16, 8, generator=data, dtype=torch.float64)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        optimizer.step()
    return {"params": [p.detach().flatten().tolist() for p in model.parameters()],
            "grad_dtypes": sorted({str(p.grad.dtype) for p in model.parameters()}),
            "buckets": len(optimizer._buckets)}


def main() -> None:
    ctx = hvdtrain.setup(device="cpu")
    report = {"wrap_first": train(ctx, True), "move_first": train(ctx, False)}
    Path(sys.argv[1], f"wrap-order.rank{ctx.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
