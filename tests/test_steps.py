"""The step callbacks (pure, or with the single-process stand-in for Horovod) and the signal set."""

import io
import signal

import pytest

from hvdtrain.job.progress import ProgressFile
from hvdtrain.job.signals import FORWARDED_SIGNALS, PREEMPT_SIGNALS, preempt_signal_problem, preempt_signals
from hvdtrain.train.dist import LocalDist
from hvdtrain.train.preempt import Preempted, Preemption, StopRequest
from hvdtrain.train.steps import ProgressBar, StepEnd, record_progress


def test_progress_bar_redraws_one_line_and_ends_the_epoch():
    stream = io.StringIO()
    bar = ProgressBar(epochs=3, stream=stream, width=10)
    bar(StepEnd(epoch=1, step=5, steps=10, samples=32))
    bar(StepEnd(epoch=1, step=10, steps=10, samples=32))
    assert stream.getvalue() == "\repoch 2/3 [#####-----] 5/10\repoch 2/3 [##########] 10/10\n"


def test_progress_file_gets_the_epochs_last_step_at_once(tmp_path):
    progress = ProgressFile({"HVDTRAIN_RUN_DIR": str(tmp_path), "OMPI_COMM_WORLD_RANK": "1"}, period_s=3600)
    callback = record_progress(progress)
    callback(StepEnd(epoch=0, step=3, steps=4, samples=8))
    assert not (tmp_path / "rank-1.progress").exists()  # mid-epoch: the writer thread's job
    callback(StepEnd(epoch=0, step=4, steps=4, samples=8))
    assert (tmp_path / "rank-1.progress").read_text() == "1 4\n"


@pytest.fixture
def stop_request():
    saved = {signum: signal.getsignal(signum) for signum in FORWARDED_SIGNALS}
    yield StopRequest(preempt_signals("USR2"))
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_preemption_stops_at_a_check_step_once_signalled(stop_request):
    preemption = Preemption(LocalDist(), stop_request, every=5)
    preemption(StepEnd(epoch=2, step=5, steps=10, samples=8))  # not signalled: goes on
    signal.raise_signal(signal.SIGUSR2)
    assert stop_request.requested
    preemption(StepEnd(epoch=2, step=4, steps=10, samples=8))  # 2 * 10 + 4 is no check step
    with pytest.raises(Preempted) as stopped:
        preemption(StepEnd(epoch=2, step=5, steps=10, samples=8))
    assert (stopped.value.epoch, stopped.value.step) == (2, 5)
    preemption(StepEnd(epoch=2, step=10, steps=10, samples=8))  # the epoch's end is saved as an epoch


def test_every_preemption_signal_is_passed_on_by_launcher_and_supervisor():
    assert {signal.Signals[f"SIG{name}"] for name in PREEMPT_SIGNALS} <= set(FORWARDED_SIGNALS)
    assert preempt_signals("USR2") == (signal.SIGUSR2, signal.SIGTERM)
    assert preempt_signals("TERM") == (signal.SIGTERM,)
    assert preempt_signal_problem("USR2") is None and "HUP" in (preempt_signal_problem("HUP") or "")
