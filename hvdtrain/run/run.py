"""``hvdtrain.Run``: checkpoints, preemption, exact resume and metrics for any training loop.

    run = hvdtrain.Run("runs/exp1", model=model, optimizer=optimizer, scheduler=scheduler)
    for epoch in run.epochs(20):          # from where the newest good checkpoint left off
        for x, y in run.batches(loader):  # set_epoch, skip what was done, stop together on a signal
            ...
            run.log(loss=loss)            # averaged over ranks; rank 0 writes it
        run.save()                        # an epoch checkpoint

Every method is called on every rank, at the same places: they hold the collectives that keep the
ranks together (the resume broadcast, the stop agreement, the log all-reduce, the save).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

import hvdtrain
from hvdtrain.errors import HvdtrainError
from hvdtrain.job.progress import ProgressFile
from hvdtrain.logs import show_log
from hvdtrain.run import checkpoint
from hvdtrain.run.identity import write_identity
from hvdtrain.run.metrics import MetricLog
from hvdtrain.run.preempt import Preempted, catch_stop_signals
from hvdtrain.run.resume import ResumePlan, plan_resume
from hvdtrain.run.rng import capture_rng, restore_rng
from hvdtrain.run.trackers import METRICS_FILE, Logged, choose_trackers, open_trackers, read_logged
from hvdtrain.train.dist import Dist

log = logging.getLogger("hvdtrain.run")
B = TypeVar("B")
PLAIN = (type(None), bool, int, float, str, torch.Tensor)


def _is_plain(value: Any) -> bool:
    """What ``torch.load(weights_only=True)`` gives back: tensors and plain values, nested."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, (str, int)) and _is_plain(item) for key, item in value.items())
    return isinstance(value, PLAIN)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise HvdtrainError(f"Run({name}={value}) must be at least 1", f"use {name}=1 or more")
    return value


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor (0 when it has none)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        return next((_batch_size(item) for item in batch if isinstance(item, torch.Tensor)), 0)
    return 0


class Run:
    """One training run in one folder, continued across preemptions, requeues and restarts.

    ``directory`` holds the run's identity, ``metrics.jsonl``, TensorBoard events and the local
    MLflow store, and its checkpoints unless ``checkpoint_dir`` names another folder (None: nothing
    is written). The keyword arguments are what a checkpoint holds: anything with
    ``state_dict()``/``load_state_dict()`` (model, optimizer, scheduler, GradScaler), and plain
    values (numbers, strings, tensors, lists and dicts of them) that ``run.values`` keeps.

    ``resume``: True continues the run in ``directory`` from its newest good checkpoint (or starts
    it); False starts a new run there (the old one's checkpoints and metrics are kept); a path
    resumes from the newest checkpoint in that folder, whichever run wrote it.
    ``keep``: checkpoints of this run kept. ``check_every``: batches between the all-reduces that
    let the ranks agree to stop on a signal. ``log_every``: optimizer steps per metric record.
    ``trackers``: "tensorboard", "mlflow" (default: ``$HVDTRAIN_TRACKERS``, else those installed;
    ``metrics.jsonl`` always).
    """

    def __init__(self, directory: str | os.PathLike[str] | None, *,
                 checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool | str | os.PathLike[str] = True,
                 keep: int = 3, check_every: int = 20, log_every: int = 10, trackers: Sequence[str] | None = None,
                 **state: Any) -> None:
        from hvdtrain.api import current_dist

        env = os.environ
        self._stop = catch_stop_signals(env)  # before anything slow: a signal from now on counts
        show_log()
        self.dist: Dist = current_dist()
        self.directory = Path(directory) if directory is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else self.directory
        self.keep, self.check_every = _positive("keep", keep), _positive("check_every", check_every)
        self.log_every = _positive("log_every", log_every)
        self.objects = {name: value for name, value in state.items()
                        if hasattr(value, "state_dict") and hasattr(value, "load_state_dict")}
        self.values: dict[str, Any] = {name: value for name, value in state.items() if name not in self.objects}
        for name, value in self.values.items():
            if not _is_plain(value):
                raise HvdtrainError(f"Run({name}=...) is a {type(value).__name__}: neither state_dict()/"
                                    "load_state_dict() nor a plain value", "pass tensors, numbers, strings, "
                                    "lists and dicts, or an object with state_dict()")
        optimizers = [value for value in self.objects.values() if isinstance(value, torch.optim.Optimizer)]
        self._optimizer = optimizers[0] if optimizers else None
        for optimizer in optimizers:
            optimizer.register_step_post_hook(self._stepped)
        self.epoch = 0  # the epoch under way (0-based)
        self.batch = 0  # batches of it done
        self.step = 0  # optimizer steps done in the whole run (batches without an optimizer)
        self._batches = 0  # batches done in the whole run
        self._stepped_at = -1  # the run's batch in which an optimizer last stepped
        self._stopping = False
        self._finished = False
        self._in_step = False  # between a batch's yield and the caller's next request
        self._stop_at_next = False
        self._warned_workers = False
        self._rng_epoch_start: dict[str, Any] | None = None
        self._rng_resume: dict[str, Any] | None = None
        self._progress = ProgressFile(env)
        self.resumed_from: Path | None = None
        plan = self._join(env, resume, trackers)
        self.run_id = plan.identity.run_id
        if plan.data:
            self._restore(plan)

    # -- start -------------------------------------------------------------------------------------

    def _join(self, env: Mapping[str, str], resume: bool | str | os.PathLike[str],
              trackers: Sequence[str] | None) -> ResumePlan:
        """Rank 0 decides which run this is and which checkpoint it continues from, and opens the
        trackers; every rank gets the decision (or rank 0's error) and the checkpoint's bytes."""
        names = choose_trackers(trackers, env)  # the same on every rank: raises alike
        outcome: tuple[ResumePlan | None, tuple[str, str] | None] = (None, None)
        logged = Logged()
        tracker_list: list[Any] = []
        if self.dist.rank == 0:
            try:
                home = self.directory or self.checkpoint_dir  # where the run's identity is kept
                plan = plan_resume(home, self.checkpoint_dir, resume)
                for line in plan.warnings:
                    log.warning(line)
                for line in plan.infos:
                    log.info(line)
                identity = plan.identity
                if self.directory is not None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    if plan.other_run:
                        _set_aside_metrics(self.directory, identity.run_id)
                    tracker_list, identity = open_trackers(names, self.directory, identity, env)
                    logged = read_logged(self.directory / METRICS_FILE)
                if home is not None:
                    home.mkdir(parents=True, exist_ok=True)
                    write_identity(home, identity)
                outcome = (plan.with_identity(identity), None)
            except HvdtrainError as exc:
                outcome = (None, (exc.problem, exc.hint))
            except OSError as exc:
                outcome = (None, (f"cannot write the run folder {home} ({exc.strerror})",
                                  "give Run a folder you can write"))
            except Exception as exc:  # a tracker's own error: every rank must hear it, none may wait
                outcome = (None, (f"starting the run failed on rank 0: {type(exc).__name__}: {exc}",
                                  "fix what it names, or start without that tracker (HVDTRAIN_TRACKERS)"))
        plan_or_none, failure = self.dist.broadcast_object(outcome)  # Horovod: rank 0's decision
        if failure is not None:
            raise HvdtrainError(*failure)
        assert plan_or_none is not None
        self._log = MetricLog(self.dist, tracker_list, logged)
        return plan_or_none

    def _restore(self, plan: ResumePlan) -> None:
        """Every rank loads the same verified checkpoint: objects, values, place and random state."""
        assert plan.path is not None
        state = checkpoint.decode(plan.data, plan.path)
        missing = [name for name in self.objects if name not in state["objects"]]
        if missing:
            held = ", ".join(state["objects"])
            raise HvdtrainError(f"checkpoint {plan.path} holds no {missing[0]!r}",
                                f"pass the same objects to Run as the run that wrote it ({held})")
        for name, value in self.objects.items():
            value.load_state_dict(state["objects"][name])
        self.values.update(state["values"])
        self.epoch, self.batch, self.step, self._batches = (int(state[key]) for key in
                                                             ("epoch", "batch", "step", "batches"))
        ranks = state["ranks"]
        if len(ranks) == self.dist.size:
            self._rng_resume = ranks[self.dist.rank]
            self._rng_epoch_start = self._rng_resume["epoch_start"]  # a stop before the next batch keeps it
            restore_rng(ranks[self.dist.rank]["now"])
            self._log.resume(ranks[self.dist.rank]["log"])
        elif self.dist.rank == 0:
            log.warning(f"{plan.path.name} was written by {len(ranks)} rank(s), this job has {self.dist.size}: "
                        "random state and metric windows start afresh, so the resumed run is not bit-identical")
        self.resumed_from = plan.path
        if self.dist.rank == 0:
            log.info(f"resuming from {plan.path} (epoch {self.epoch} done, {self.batch} batches into the next)")

    # -- the loop ----------------------------------------------------------------------------------

    def epochs(self, count: int) -> Iterator[int]:
        """The epochs left of ``count`` (0-based). Before each one the ranks agree whether to stop."""
        if not self.batch:
            self._flush()  # what a restored checkpoint had logged after its epoch's last step
        while self.epoch < count:
            self._agree_to_stop()
            if self._stopping:
                self._preempt()
            epoch = self.epoch
            yield epoch
            if self.epoch == epoch:  # its batches were not taken through run.batches
                self.epoch, self.batch = epoch + 1, 0
            self._flush()
        self._flush()
        if not self._finished:
            self._finished = True
            self._log.close("FINISHED")

    def batches(self, loader: Iterable[B], limit: int | None = None) -> Iterator[B]:
        """This epoch's batches of ``loader`` (at most ``limit``): the sampler's ``set_epoch``, the
        batches a resumed run already did skipped (they are drawn again, so data workers and
        augmentation see exactly the same random numbers), and a stop on every rank at the same
        optimizer step when a stop signal came. Ends the process with exit 75 after saving."""
        epoch = self.epoch
        sampler: Any = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch") and getattr(sampler, "epoch", None) != epoch:
            sampler.set_epoch(epoch)
        total = _length(loader, limit)
        if getattr(loader, "persistent_workers", False) and self.dist.rank == 0 and not self._warned_workers:
            self._warned_workers = True
            log.warning("persistent_workers=True: data workers keep their random state across epochs, so a "
                        "resumed run is not bit-identical (use persistent_workers=False for exact resume)")
        skip, resume = self.batch, self._rng_resume
        self._rng_resume = None
        if skip and resume is not None:
            restore_rng(resume["epoch_start"])  # the loader draws its workers' seeds from it
        self._rng_epoch_start = capture_rng()
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator)
        if skip and resume is not None:
            restore_rng(resume["now"])
        try:
            while total is None or self.batch < total:
                before = capture_rng() if self._stop_at_next else None  # a loader of unknown length
                try:
                    item = next(iterator)
                except StopIteration:
                    break  # no batch left: the epoch ends as it would have, and the stop waits for the next
                if before is not None:
                    self._preempt(before)
                self._log.samples += _batch_size(item)
                self._in_step = True
                yield item
                self._in_step = False
                self._after_batch(epoch, total)
            self._flush()  # the epoch's last steps get their record before anything else is logged
        finally:  # the epoch ran out, or the caller left it (break): it is done (unless it was preempted)
            if self.epoch == epoch and not self._finished:
                self.epoch, self.batch = epoch + 1, 0

    def _stepped(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._stepped_at = self._batches  # idempotent: a wrapped optimizer's hooks can run twice

    def _after_batch(self, epoch: int, total: int | None) -> None:
        """The caller's step is done: count it, log, and stop here if the ranks agreed to."""
        at_step = self._optimizer is None or self._stepped_at == self._batches
        self.batch += 1
        self._batches += 1
        self.step += at_step
        self._progress.update(epoch + 1, self.batch)
        if at_step and self.step % self.log_every == 0:
            self._flush()
        if self._batches % self.check_every == 0:
            self._agree_to_stop()
        # A stop waits for a whole optimizer step (accumulation) and leaves the epoch's last batch
        # to the epoch's end, so a run whose last step is done always finishes.
        if self._stopping and at_step:
            if total is None:
                self._stop_at_next = True  # only once the next batch is known to exist
            elif self.batch < total:
                self._preempt()

    def _agree_to_stop(self) -> None:
        flag = torch.tensor([1.0 if self._stop.requested else 0.0], dtype=torch.float64)
        if self.dist.allreduce_sum(flag, name="hvdtrain.preempt").item() > 0:  # Horovod: any rank signalled
            self._stopping = True

    def _preempt(self, rng_now: dict[str, Any] | None = None) -> None:
        saved = self._save(rng_now)
        if self.dist.rank == 0:
            where = f"saved {saved}" if saved else "no checkpoint folder, nothing saved"
            log.info(f"hvdtrain: stopping on {self._stop.name}/TERM: {where}; exit 75")
        self._log.close("KILLED")
        self._finished = True
        raise Preempted(self.epoch, self.batch, str(saved) if saved else None)

    def rewind(self, epoch: int) -> None:
        """Continue from the start of what is left of ``epoch``: Horovod elastic rolled the ranks
        back to their last commit, and its sampler keeps the epoch's place itself."""
        self.epoch, self.batch, self._rng_resume = epoch, 0, None

    # -- records -----------------------------------------------------------------------------------

    def log(self, **values: Any) -> None:
        """Numbers or tensors to log; averaged over calls and ranks, written every ``log_every``
        optimizer steps and at the end of each epoch, with the step, epoch, LR and samples/s."""
        self._log.add(values)

    def _flush(self) -> None:
        lr = float(self._optimizer.param_groups[0]["lr"]) if self._optimizer is not None else None
        # Inside an epoch's batches, the epoch under way; after them, the epoch just done (1-based).
        self._log.flush(self.step, self.epoch + 1 if self.batch else max(self.epoch, 1), lr)

    def save(self) -> Path | None:
        """A checkpoint of this exact place, written by rank 0 (atomically, with its sha256), keeping
        this run's newest ``keep``. Returns its path (None without a checkpoint folder). Called inside
        ``run.batches``, as the step's last statement: the place after that batch."""
        return self._save(None)

    def _save(self, rng_now: dict[str, Any] | None) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        # Inside a step, its batch counts as done (and its optimizer step, if it made one).
        done = int(self._in_step)
        stepped = done and (self._optimizer is None or self._stepped_at == self._batches)
        batch, batches, step = self.batch + done, self._batches + done, self.step + stepped
        # Horovod: every rank's random state and unwritten log window, so each rank draws the same
        # numbers and writes the same records after a resume.
        ranks = self.dist.allgather_object({"epoch_start": self._rng_epoch_start, "now": rng_now or capture_rng(),
                                            "log": self._log.pending()})
        outcome: tuple[str | None, str | None] = (None, None)
        if self.dist.rank == 0:
            path = checkpoint.checkpoint_path(self.checkpoint_dir, self.run_id, self.epoch, batch)
            state = {"hvdtrain_version": hvdtrain.__version__, "run_id": self.run_id, "epoch": self.epoch,
                     "batch": batch, "step": step, "batches": batches, "world_size": self.dist.size,
                     "objects": {name: value.state_dict() for name, value in self.objects.items()},
                     "values": dict(self.values), "ranks": ranks}
            try:
                checkpoint.write_checkpoint(path, checkpoint.encode(state), self.run_id, self.keep)
                outcome = (str(path), None)
            except OSError as exc:
                outcome = (None, f"cannot write checkpoint {path} ({exc.strerror})")
        written, problem = self.dist.broadcast_object(outcome)  # Horovod: wait for rank 0's write
        if problem is not None:
            raise HvdtrainError(problem, "free space in the checkpoint folder, or point Run at another one")
        return Path(written) if written else None


def _length(loader: Iterable[Any], limit: int | None) -> int | None:
    try:
        length = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return length if limit is None else min(length, limit)


def _set_aside_metrics(directory: Path, run_id: str) -> None:
    """A new run in a folder that holds another run's metrics.jsonl: that file is kept, renamed
    after the run that replaced it (a random id, so no earlier file is overwritten)."""
    path = directory / METRICS_FILE
    if path.exists():
        path.rename(directory / f"metrics-before-{run_id}.jsonl")

