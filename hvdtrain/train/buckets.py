"""Gradient buckets: the gradients live in a few flat buffers, and each buffer is one Horovod
all-reduce, started during backward as soon as its last gradient is in (torch DDP's buckets).

Horovod's ``DistributedOptimizer`` all-reduces every gradient tensor on its own: a Python hook
that enqueues it, a negotiation entry, and a wait, per tensor. On a compute-bound CNN whose ranks
share their cores with the model, that per-tensor path cost about 1 ms of a 21 ms step more than
one all-reduce of all the gradients (docs/performance.md). Here each parameter's ``.grad`` is a view
into its bucket's buffer, so backward writes the gradients where the all-reduce reads them and the
average lands back in ``.grad`` with no copy (torch DDP's ``gradient_as_bucket_view``).

``zero_grad`` therefore zeroes the buffers instead of setting gradients to None. A gradient that
someone replaced (``p.grad = ...``, or set to None) is copied back into its view before its bucket
is reduced. The buckets follow the parameters: a model moved after its optimizer was wrapped
(``model.to("cuda")``) gets new buckets on its device at the next ``zero_grad`` or backward.

Adasum combines each tensor on its own, so it stays with Horovod's per-tensor optimizer.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

MIB = 1 << 20


def plan_buckets(tensors: Sequence[tuple[int, Hashable]], cap_bytes: int) -> tuple[tuple[int, ...], ...]:
    """Group tensor indices into buckets of at most ``cap_bytes``, given each tensor's
    ``(bytes, kind)`` in the order backward is expected to produce them. Each bucket holds one
    kind (device and dtype) of consecutive tensors; a tensor larger than the cap gets its own.
    The buckets come out in the order their last tensor arrives."""
    done: list[list[int]] = []
    open_: dict[Hashable, tuple[list[int], int]] = {}
    for index, (nbytes, kind) in enumerate(tensors):
        members, size = open_.get(kind, ([], 0))
        if members and size + nbytes > cap_bytes:
            done.append(members)
            members, size = [], 0
        open_[kind] = ([*members, index], size + nbytes)
    done.extend(members for members, _ in open_.values())
    return tuple(tuple(members) for members in sorted(done, key=max))


@dataclass
class _Bucket:
    """One flat buffer, the parameters whose gradients are views into it, and its all-reduce."""

    flat: torch.Tensor
    params: tuple[torch.nn.Parameter, ...]
    views: tuple[torch.Tensor, ...]
    waiting: int = 0  # gradient arrivals still to come before the all-reduce starts
    handle: Any = None  # Horovod's handle while the all-reduce is in flight
    ctx: Any = None  # the compression's context for the result

    def rearm(self, passes: int) -> None:
        """Ready for the next step: nothing in flight, every gradient's ``passes`` arrivals to come."""
        self.handle = self.ctx = None
        self.waiting = len(self.params) * passes


def _adopt(param: torch.nn.Parameter, view: torch.Tensor) -> None:
    """Make ``param.grad`` its bucket view again, keeping its value (None counts as zeros)."""
    grad = param.grad
    if grad is view:
        return
    if grad is None:
        view.zero_()
    elif grad.is_sparse:
        raise RuntimeError(f"a sparse gradient (shape {tuple(param.shape)}) cannot live in a gradient "
                           "bucket; train with --bucket-mb 0 to reduce it tensor by tensor")
    else:
        view.copy_(grad)
    param.grad = view


class GradientBuckets(torch.optim.Optimizer):
    """Mixed in before a torch optimizer's class (``bucketed``): its ``step`` first averages the
    gradients across ranks, bucket by bucket. Same interface as Horovod's ``DistributedOptimizer``:
    ``synchronize()``, ``skip_synchronize()``."""

    def __init__(self, params: Any, hvd: ModuleType, cap_bytes: int, compression: Any,
                 backward_passes_per_step: int) -> None:
        super().__init__(params)  # type: ignore[call-arg]  # the torch optimizer's own, with its defaults
        self._hvd, self._compression = hvd, compression
        self._passes, self._cap_bytes = backward_passes_per_step, cap_bytes
        self._should_synchronize = True
        trained = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        trained.reverse()  # backward produces the last layers' gradients first
        self._trained = tuple(trained)
        self._place()
        for position, param in enumerate(self._trained):
            param.register_post_accumulate_grad_hook(self._arrival(position))  # type: ignore[no-untyped-call]

    def _place(self) -> None:
        """(Re)build the buckets on the parameters' devices and dtypes, keeping the gradients' values."""
        plan = plan_buckets([(p.numel() * p.element_size(), (p.device, p.dtype)) for p in self._trained],
                            self._cap_bytes)
        self._buckets = tuple(self._make_bucket([self._trained[i] for i in members]) for members in plan)
        home: dict[int, tuple[int, torch.Tensor]] = {}
        for index, members in enumerate(plan):
            home.update((position, (index, view)) for position, view in zip(members, self._buckets[index].views,
                                                                            strict=True))
        self._home = home

    def _follow(self, pairs: Sequence[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        """Rebuild the buckets when a parameter moved away from its gradient's buffer
        (``model.to(...)`` after wrapping the optimizer, which Horovod's optimizer tolerates too).
        The optimizer's state (momentum, made by the first broadcast) moves with them, as torch's
        ``load_state_dict`` places it."""
        if any(param.device != buffer.device or param.dtype != buffer.dtype for param, buffer in pairs):
            self._place()
            super().load_state_dict(self.state_dict())

    def _make_bucket(self, params: list[torch.nn.Parameter]) -> _Bucket:
        flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
        views, offset = [], 0
        for param in params:
            views.append(flat[offset:offset + param.numel()].view_as(param))
            offset += param.numel()
        bucket = _Bucket(flat, tuple(params), tuple(views))
        bucket.rearm(self._passes)
        for param, view in zip(bucket.params, bucket.views, strict=True):
            _adopt(param, view)
        return bucket

    def _arrival(self, position: int) -> Any:
        def hook(param: torch.nn.Parameter) -> None:
            self._follow([(param, self._home[position][1])])
            index, view = self._home[position]
            bucket = self._buckets[index]
            if bucket.waiting == 0:
                raise RuntimeError(f"gradients were computed more than {self._passes} time(s) before "
                                   "optimizer.step(); pass --accumulate N to add up N backward passes")
            _adopt(param, view)
            bucket.waiting -= 1
            if bucket.waiting == 0:
                self._start(index)
        return hook

    def _follow_model(self) -> None:
        self._follow([(bucket.params[0], bucket.flat) for bucket in self._buckets])  # a model moves whole

    def _start(self, index: int) -> None:
        bucket = self._buckets[index]
        wire, bucket.ctx = self._compression.compress(bucket.flat)  # the buffer itself, or its fp16 copy
        # Horovod: one averaging all-reduce for the whole bucket, in place.
        bucket.handle = self._hvd.allreduce_async_(wire, name=f"hvdtrain.grads.{index}", op=self._hvd.Average)

    def synchronize(self) -> None:
        """Finish every bucket's all-reduce (starting those whose gradients never all arrived):
        afterwards each ``.grad`` holds the average over all ranks."""
        if all(bucket.handle is None for bucket in self._buckets):
            self._follow_model()
        for index, bucket in enumerate(self._buckets):
            if bucket.handle is None:
                for param, view in zip(bucket.params, bucket.views, strict=True):
                    _adopt(param, view)
                self._start(index)
        for bucket in self._buckets:
            result = self._hvd.synchronize(bucket.handle)  # Horovod: wait for the average
            if result is not bucket.flat:
                bucket.flat.copy_(self._compression.decompress(result, bucket.ctx))
            bucket.rearm(self._passes)

    @contextmanager
    def skip_synchronize(self) -> Iterator[None]:
        """``step()`` inside this block does not reduce again (after an explicit ``synchronize()``)."""
        self._should_synchronize = False
        try:
            yield
        finally:
            self._should_synchronize = True

    def step(self, closure: Any = None) -> Any:
        if self._should_synchronize:
            self.synchronize()
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the buffers; gradients stay views into them (``set_to_none`` cannot apply)."""
        if any(bucket.handle is not None for bucket in self._buckets):
            raise RuntimeError("optimizer.zero_grad() was called after backward but before optimizer.step() "
                               "or synchronize(); it would race with the gradients' all-reduce")
        self._follow_model()
        for bucket in self._buckets:
            bucket.flat.zero_()
            for param, view in zip(bucket.params, bucket.views, strict=True):
                param.grad = view

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the inner optimizer's state; an all-reduce a failure left in flight is dropped
        (Horovod elastic restores the last commit this way)."""
        for bucket in self._buckets:
            bucket.rearm(self._passes)
        self._should_synchronize = True
        super().load_state_dict(state_dict)


def bucketed(optimizer: torch.optim.Optimizer, hvd: ModuleType, bucket_mb: float, compression: Any,
             backward_passes_per_step: int) -> torch.optim.Optimizer:
    """``optimizer``'s class with ``GradientBuckets`` mixed in, over the same parameter groups
    (as Horovod builds its ``DistributedOptimizer``)."""
    cls = type(type(optimizer).__name__, (GradientBuckets, type(optimizer)), {})
    wrapped: torch.optim.Optimizer = cls(optimizer.param_groups, hvd, int(bucket_mb * MIB), compression,
                                         backward_passes_per_step)
    return wrapped
