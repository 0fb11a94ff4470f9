"""The step callbacks (pure) and the signal set."""

import io
import signal

from hvdtrain.job.signals import FORWARDED_SIGNALS, PREEMPT_SIGNALS, preempt_signal_problem, preempt_signals
from hvdtrain.train.steps import ProgressBar, StepEnd


def test_progress_bar_redraws_one_line_and_ends_the_epoch():
    stream = io.StringIO()
    bar = ProgressBar(epochs=3, stream=stream, width=10)
    bar(StepEnd(epoch=1, step=5, steps=10, samples=32))
    bar(StepEnd(epoch=1, step=10, steps=10, samples=32))
    assert stream.getvalue() == "\repoch 2/3 [#####-----] 5/10\repoch 2/3 [##########] 10/10\n"


def test_every_preemption_signal_is_passed_on_by_launcher_and_supervisor():
    assert {signal.Signals[f"SIG{name}"] for name in PREEMPT_SIGNALS} <= set(FORWARDED_SIGNALS)
    assert preempt_signals("USR2") == (signal.SIGUSR2, signal.SIGTERM)
    assert preempt_signals("TERM") == (signal.SIGTERM,)
    assert preempt_signal_problem("USR2") is None and "HUP" in (preempt_signal_problem("HUP") or "")
