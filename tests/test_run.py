"""``hvdtrain.Run`` in one process (the single-process stand-in for Horovod): where a signal stops
it, that a stopped run resumes bit-identical, what its checkpoints hold, and bad arguments."""

import hashlib
import json
import signal

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.signals import FORWARDED_SIGNALS, PREEMPTED_EXIT
from hvdtrain.run.preempt import PREEMPT_SIGNAL_VARIABLE, Preempted, catch_stop_signals, preempt_signal_name
from hvdtrain.run.run import Run


class Noisy(Dataset):
    """48 random points, with noise drawn at each access (augmentation)."""

    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(48, 4, generator=generator), torch.randint(0, 3, (48,), generator=generator)

    def __len__(self):
        return 48

    def __getitem__(self, index):
        return self.x[index] + 0.1 * torch.randn(4), self.y[index]


@pytest.fixture(autouse=True)
def own_handlers(monkeypatch):
    """Each test installs the stop handlers afresh and leaves the process's handlers as they were."""
    saved = {signum: signal.getsignal(signum) for signum in FORWARDED_SIGNALS}
    monkeypatch.setenv("HVDTRAIN_TRACKERS", "none")
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


class Stream(IterableDataset):
    """The same points as a stream: a loader over it has no length."""

    def __iter__(self):
        data = Noisy()
        return (data[index] for index in range(len(data)))


class Crash(Exception):
    pass


def train(run_dir, epochs=3, stop_after=None, accumulate=2, stream=False, save_steps=False, crash_after=None,
          checkpoint_only=False):
    """A loop with dropout, noise, a scheduler and accumulation; signals itself after ``stop_after``
    batches (or raises after ``crash_after``). Returns the parameters' digest."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    loader = DataLoader(Stream() if stream else Noisy(), batch_size=4, shuffle=not stream)
    where = {"directory": None, "checkpoint_dir": run_dir} if checkpoint_only else {"directory": run_dir}
    run = Run(**where, model=model, optimizer=optimizer, scheduler=scheduler, check_every=2, log_every=2)
    seen = 0
    for _ in run.epochs(epochs):
        for x, y in run.batches(loader):
            (F.cross_entropy(model(x), y) / accumulate).backward()
            stepped = (run.batch + 1) % accumulate == 0
            if stepped:
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
            run.log(loss=F.cross_entropy(model(x), y))
            seen += 1
            if seen == stop_after:
                signal.raise_signal(signal.SIGUSR1)
            if seen == crash_after:
                raise Crash
            if save_steps and stepped:
                run.save()  # the step's last statement: the place after it
        run.save()
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()


@pytest.mark.parametrize("stop_after", [1, 5, 12, 13, 30])
def test_a_stopped_run_resumes_bit_identical(tmp_path, stop_after):
    expected = train(tmp_path / "straight")
    with pytest.raises(Preempted) as stopped:
        train(tmp_path / "run", stop_after=stop_after)
    assert stopped.value.code == PREEMPTED_EXIT
    # It stops at the first check (every 2 batches) after the signal that ends a whole step (2 batches).
    done = stopped.value.epoch * 12 + stopped.value.batch
    assert done >= stop_after and done % 2 == 0 and done - stop_after < 4
    assert stopped.value.saved and stopped.value.saved.endswith(".pt")
    catch_stop_signals({}).requested = False  # a new process, as after a requeue
    assert train(tmp_path / "run") == expected
    assert _records(tmp_path / "run") == _records(tmp_path / "straight")  # every record once, same values


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{key: value for key, value in json.loads(line).items() if key != "samples_per_sec"} for line in lines]


def test_a_signal_in_the_last_epochs_last_steps_finishes_the_run(tmp_path):
    expected = train(tmp_path / "straight")
    assert train(tmp_path / "run", stop_after=35) == expected  # 36 batches: no step is left to stop at


def test_the_signal_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(PREEMPT_SIGNAL_VARIABLE, "USR2")
    flag = catch_stop_signals({PREEMPT_SIGNAL_VARIABLE: "USR2"})
    assert flag.name == "USR2" and not flag.requested
    signal.raise_signal(signal.SIGUSR2)
    assert flag.requested
    assert catch_stop_signals({}) is flag  # installed once: a later call (Run after setup) gets the same flag
    with pytest.raises(HvdtrainError, match="HVDTRAIN_PREEMPT_SIGNAL 'HUP' is not one of"):
        preempt_signal_name({PREEMPT_SIGNAL_VARIABLE: "HUP"})


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(HvdtrainError, match=r"Run\(keep=0\) must be at least 1"):
        Run(tmp_path, keep=0)
    with pytest.raises(HvdtrainError, match=r"Run\(thing=...\) is a object: neither state_dict"):
        Run(tmp_path, thing=object())
    with pytest.raises(HvdtrainError, match="unknown tracker 'wandb'"):
        Run(tmp_path, trackers=["wandb"])


def test_a_checkpoint_missing_an_object_is_refused(tmp_path):
    model = nn.Linear(2, 2)
    run = Run(tmp_path, model=model)
    for _ in run.epochs(1):
        pass
    run.save()
    with pytest.raises(HvdtrainError, match="holds no 'optimizer'"):
        Run(tmp_path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_a_signal_at_the_last_batch_of_a_stream_finishes_the_run(tmp_path):
    expected = train(tmp_path / "straight", stream=True)
    assert train(tmp_path / "run", stream=True, stop_after=35) == expected  # 12 batches an epoch, no length
    with pytest.raises(Preempted):
        train(tmp_path / "stopped", stream=True, stop_after=20)
    catch_stop_signals({}).requested = False
    assert train(tmp_path / "stopped", stream=True) == expected


def test_a_save_inside_a_step_resumes_after_that_step(tmp_path):
    expected = train(tmp_path / "straight")
    with pytest.raises(Crash):
        train(tmp_path / "run", save_steps=True, crash_after=17)  # saved after batch 16, then crashed
    assert train(tmp_path / "run", save_steps=True) == expected


def test_a_stop_right_after_a_resume_keeps_a_good_checkpoint(tmp_path):
    expected = train(tmp_path / "straight")
    with pytest.raises(Preempted):
        train(tmp_path / "run", stop_after=5)  # mid-epoch
    with pytest.raises(Preempted):
        train(tmp_path / "run")  # the flag is still up: it stops before its first batch, saving again
    catch_stop_signals({}).requested = False
    assert train(tmp_path / "run") == expected


def test_a_run_with_only_a_checkpoint_folder_resumes_its_own(tmp_path):
    expected = train(tmp_path / "straight")
    with pytest.raises(Preempted):
        train(tmp_path / "ckpt", stop_after=9, checkpoint_only=True)
    catch_stop_signals({}).requested = False
    assert train(tmp_path / "ckpt", checkpoint_only=True) == expected
