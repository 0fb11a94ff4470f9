"""``hvdtrain train``: options, an optional YAML config file, and the effective configuration."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from hvdtrain.cli.options import defaults_of
from hvdtrain.errors import HvdtrainError
from hvdtrain.job.ranks import rank_from_env
from hvdtrain.job.signals import PREEMPT_SIGNALS
from hvdtrain.logs import show_log
from hvdtrain.run.preempt import PREEMPT_SIGNAL_VARIABLE, catch_stop_signals
from hvdtrain.train.config import AMPS, COMPRESSIONS, DEVICES, LR_SCHEDULES, OPS, OPTIMIZERS, TrainConfig
from hvdtrain.train.config_file import normalize_config, read_config_file, render_effective

NOT_CONFIG = ("config", "print_config")  # options that are about the config, not in it


def _apply_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Eager: the file's values become defaults, so options on the command line override them."""
    if value is not None:
        known = {p.name for p in ctx.command.params if p.name and p.name not in NOT_CONFIG}
        ctx.default_map = normalize_config(read_config_file(value), known, f"--config {value}")
    return value


def build_config(options: dict[str, Any]) -> TrainConfig:
    """The click options of ``hvdtrain train`` -> a validated ``TrainConfig``."""
    options = {key: value for key, value in options.items() if key not in NOT_CONFIG}
    resume = options.pop("resume")
    checkpoint_dir = options.pop("checkpoint_dir")
    if resume == "" and checkpoint_dir is None:
        raise HvdtrainError("--resume needs to know where the checkpoints are",
                            "add --checkpoint-dir DIR, or give --resume DIR")
    resume_from = Path(resume) if resume else checkpoint_dir if resume == "" else None
    return TrainConfig(lr_scaling=not options.pop("no_lr_scaling"), resume_from=resume_from,
                       checkpoint_dir=checkpoint_dir or resume_from, **options)


PATH = click.Path(file_okay=False, path_type=Path)


_default = defaults_of(TrainConfig)


@click.command()
@click.option("--config", type=click.Path(dir_okay=False, exists=True, path_type=Path), is_eager=True,
              expose_value=True, callback=_apply_config, help="YAML file of options; the command line overrides it.")
@click.option("--print-config", is_flag=True, help="Print the effective options as YAML and exit.")
@click.option("--model", default=_default("model"), show_default=True, help="mlp, cnn, or module:function of your own.")
@click.option("--dataset", default=_default("dataset"), show_default=True,
              help="digits, synthetic, npz:PATH, csv:PATH, or module:function of your own.")
@click.option("--label-column", default=_default("label_column"), show_default=True,
              help="The label column of a csv: dataset.")
@click.option("--epochs", type=int, default=_default("epochs"), show_default=True,
              help="Passes over the training data (a resumed run counts the ones done).")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True,
              help="Samples per rank per step.")
@click.option("--lr", type=float, default=_default("lr"), show_default=True, help="Learning rate for one rank.")
@click.option("--no-lr-scaling", is_flag=True, help="Do not multiply the LR by the number of ranks.")
@click.option("--warmup-epochs", type=float, default=_default("warmup_epochs"), show_default=True,
              help="Ramp the LR linearly from the one-rank LR to the scaled LR over these epochs.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=_default("lr_schedule"), show_default=True,
              help="After warmup: constant, cosine to 0, or step (x0.1 at 1/2 and 3/4).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_default("optimizer"), show_default=True,
              help="SGD with --momentum, or Adam.")
@click.option("--momentum", type=float, default=_default("momentum"), show_default=True, help="SGD momentum.")
@click.option("--seed", type=int, default=_default("seed"), show_default=True,
              help="Seed of the model's initial weights, the split and the shuffling.")
@click.option("--shuffle/--no-shuffle", default=_default("shuffle"), show_default=True,
              help="Shuffle the training data each epoch (the same order on every run with one --seed).")
@click.option("--accumulate", type=int, default=_default("accumulate"), show_default=True,
              help="Micro-batches per optimizer step; gradients are all-reduced once per step.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default=_default("compression"), show_default=True,
              help="fp16: send gradients as float16.")
@click.option("--op", type=click.Choice(OPS), default=_default("op"), show_default=True, help="How gradients combine.")
@click.option("--bucket-mb", type=float, default=_default("bucket_mb"), show_default=True,
              help="Gradients are all-reduced in flat buckets of up to this many MiB, each started as soon as "
                   "backward has filled it; 0: one all-reduce per gradient tensor (Horovod's way, always "
                   "with Adasum).")
@click.option("--clip-grad-norm", type=float, default=_default("clip_grad_norm"),
              help="Clip the all-reduced gradients to this norm.")
@click.option("--amp", type=click.Choice(AMPS), default=_default("amp"), show_default=True,
              help="Mixed precision: bf16 (CPU or GPU) or fp16 (GPU, with loss scaling).")
@click.option("--eval-every", type=int, default=_default("eval_every"), show_default=True,
              help="Validate every N epochs (and last).")
@click.option("--threads-per-rank", type=int, default=_default("threads_per_rank"),
              help="torch threads per rank [default: usable cores / ranks on this node].")
@click.option("--device", type=click.Choice(DEVICES), default=_default("device"), show_default=True,
              help="auto: a GPU per rank when the rank sees one (cuda:<local rank>, or cuda:0 when bound per task), "
                   "else the CPU.")
@click.option("--out", type=PATH, default=_default("out"),
              help="Directory for metrics.jsonl, summary.json, run.json and model.pt (written by rank 0).")
@click.option("--checkpoint-dir", type=PATH, default=_default("checkpoint_dir"),
              help="Write a checkpoint here after every epoch (rank 0, atomically).")
@click.option("--elastic", is_flag=True,
              help="Survive lost workers (launch with hvdtrain run --elastic): roll back to the last commit.")
@click.option("--commit-every", type=int, default=_default("commit_every"), show_default=True,
              help="With --elastic: optimizer steps between commits.")
@click.option("--auto-resume", is_flag=True,
              help="Resume from --checkpoint-dir when it holds a checkpoint, else start fresh (for batch jobs).")
@click.option("--preempt-signal", type=click.Choice(PREEMPT_SIGNALS), default=_default("preempt_signal"),
              help=f"On this signal (and TERM) save the exact step (with --checkpoint-dir) and exit 75 "
                   f"[default: ${PREEMPT_SIGNAL_VARIABLE}, which the sbatch templates set, else USR1].")
@click.option("--preempt-check-every", type=int, default=_default("preempt_check_every"), show_default=True,
              help="Steps between the all-reduces that let every rank agree to stop.")
@click.option("--log-every", type=int, default=_default("log_every"), show_default=True,
              help="Optimizer steps per line of step metrics (loss, LR, samples/s) in metrics.jsonl.")
@click.option("--keep-checkpoints", type=int, default=_default("keep_checkpoints"), show_default=True,
              help="Keep the newest K checkpoints.")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Continue from the newest checkpoint in DIR (default: --checkpoint-dir).")
def train(**options: Any) -> None:
    """Train on every rank of the job that started this process (or alone).

    \b
    Examples:
      hvdtrain run -np 2 -- hvdtrain train --model cnn --epochs 10 --out runs/demo
      hvdtrain run -np 2 -- hvdtrain train --model mymodels:build --dataset npz:data.npz
      hvdtrain train --config train.yaml --epochs 3 --print-config
    """
    cfg = build_config(dict(options))
    if options["print_config"]:
        order = [param.name for param in click.get_current_context().command.params if param.name]
        click.echo(render_effective(options, [name for name in order if name not in NOT_CONFIG]), nl=False)
        return
    # Catch Slurm's warning signal before the slow imports, so one sent during start-up counts.
    # The handlers stay until the process exits: a late signal never fails a finished run.
    catch_stop_signals(os.environ, cfg.preempt_signal)
    from hvdtrain.train.worker import run_worker

    show_log()
    try:
        run_worker(cfg, os.environ, sys.argv)
    except HvdtrainError:
        raise  # raised alike on every rank: one line and exit 2
    except Exception:  # not SystemExit: a preemption (exit 75) ends the process as it is
        abort_rank(traceback.format_exc())


def abort_rank(trace: str) -> NoReturn:
    """A bug or a broken node on one rank: say which rank, where, and why, then end this process
    at once (no interpreter shutdown that could wait on a collective). The launcher sees the
    failed rank and ends the others, so nobody waits in an all-reduce until the time limit."""
    rank = rank_from_env(os.environ)
    sys.stderr.write(f"hvdtrain: rank {rank} on {socket.gethostname()} (pid {os.getpid()}) failed; "
                     f"ending the job\n{trace}")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)
