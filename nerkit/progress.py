"""What a person reads while a run goes: one short line per epoch (loss, validation loss, F1, the best F1
so far), the scores per entity type once at the end, and progress bars only on a terminal.

    line = progress_line(2, {"loss": 0.41, "eval_loss": 0.38, "eval_f1": 0.61}, epochs=6, best=Best(1, 0.65))
    text = score_table(metrics, "eval")
"""

import logging
import sys
from typing import NamedTuple

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

logger = logging.getLogger(__name__)


def interactive():
    """Whether a person watches the output live: bars and colours only then, never in a log file."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))  # None: closed


class Best(NamedTuple):
    """The evaluation a run keeps so far: when (epochs trained), its score, and the score's name."""

    epoch: float
    value: float
    name: str = "F1"


def progress_line(epoch, logs, epochs=None, step=None, best=None):
    """'epoch 2/6 (step 40/120): loss 0.4100, validation loss 0.3800, F1 0.6100, best F1 0.6500 (epoch 1)'.

    `logs` may hold the training `loss`, `eval_loss` and `eval_f1`; `best` (a Best) is the evaluation the
    run keeps so far, named with an evaluation's F1; `epochs` and `step` ("40/120") are shown when given."""
    parts = []
    if logs.get("loss") is not None:
        parts.append(f"loss {logs['loss']:.4f}")
    if logs.get("eval_loss") is not None:
        parts.append(f"validation loss {logs['eval_loss']:.4f}")
    if logs.get("eval_f1") is not None:
        parts.append(f"F1 {logs['eval_f1']:.4f}" + (
            f", best {best.name} {best.value:.4f} (epoch {round(best.epoch, 2):g})" if best else ""))
    where = f"epoch {round(epoch, 2):g}" + (f"/{round(epochs, 2):g}" if epochs else "") + \
        (f" (step {step})" if step else "")
    return f"{where}: {', '.join(parts)}"


def best_evaluation(evaluations, metric=None, greater=True):
    """The Best of the evaluations (the Trainer's log entries) as the Trainer weighs them: by
    --metric_for_best_model in its direction, the first of equal scores, among the evaluations made while
    training (not --eval_on_start's, at step 0, which it never keeps); by F1 where no metric is named. None
    before one."""
    name = metric.removeprefix("eval_") if metric else "f1"
    key, greater = f"eval_{name}", greater if metric else True
    scored = [entry for entry in evaluations if entry.get(key) is not None and entry.get("step", 1) > 0]
    if not scored:
        return None
    best = scored[0]
    for entry in scored[1:]:
        if (entry[key] > best[key]) if greater else (entry[key] < best[key]):
            best = entry
    return Best(best["epoch"], best[key], {"f1": "F1", "loss": "validation loss"}.get(name, f"validation {name}"))


def score_table(metrics, prefix):
    """The scores of an evaluation as a table: precision, recall, F1 and gold count per entity type (with
    --return_entity_level_metrics) and overall, then accuracy and loss."""
    types = sorted(key[len(prefix) + 1:-len("_number")] for key in metrics
                   if key.startswith(f"{prefix}_") and key.endswith("_number"))
    width = max([len(kind) for kind in types] + [len("overall")])
    # gold counts come with the per-type scores only
    rows = [f"{'':<{width}}  precision  recall      f1" + ("  number" if types else "")]
    for kind in types:
        rows.append(score_row(kind.ljust(width), metrics, f"{prefix}_{kind}", metrics[f"{prefix}_{kind}_number"]))
    if f"{prefix}_f1" in metrics:
        total = sum(metrics[f"{prefix}_{kind}_number"] for kind in types) if types else ""
        rows.append(score_row("overall".ljust(width), metrics, prefix, total))
    extra = [f"{name} {metrics[f'{prefix}_{name}']:.4f}" for name in ("accuracy", "loss")
             if f"{prefix}_{name}" in metrics]
    if extra:
        rows.append(", ".join(extra))
    return "\n".join(rows)


def score_row(name, metrics, key, number):
    precision, recall, f1 = (metrics[f"{key}_{score}"] for score in ("precision", "recall", "f1"))
    return f"{name}  {precision:9.4f}  {recall:6.4f}  {f1:6.4f}  {number:>6}".rstrip()


def trainer_line(args, state, control, logs, epochs=None):
    """The short line for one of the Trainer's logs during training, or None: a training loss that an
    evaluation follows at once is written with that evaluation, and the final summary is left out. `epochs`:
    the epochs the run will have trained (`epochs_to_train`), else the Trainer's count."""
    evaluation = "eval_loss" in logs or "eval_f1" in logs
    if not evaluation and ("loss" not in logs or control.should_evaluate):
        return None
    history = state.log_history
    if evaluation:  # the training loss logged at the same step, if any
        logs = {**next((e for e in history if e.get("step") == state.global_step and "loss" in e), {}), **logs}
    epoch = logs.get("epoch", state.epoch)
    # the last entry of the history is this log's (with its step)
    best = best_evaluation(history, args.metric_for_best_model, args.greater_is_better) if evaluation else None
    return progress_line(epoch, logs, epochs or state.num_train_epochs, f"{state.global_step}/{state.max_steps}",
                         best)


def epochs_to_train(max_steps, accumulation, batches_per_epoch):
    """The epochs a Trainer run will have trained when it stops at optimizer step `max_steps`, as the
    Trainer counts epochs (a share of an epoch's batches): its own `num_train_epochs` counts an epoch that
    --max_steps ends within as whole. An epoch has ceil(batches / accumulation) steps, the last of which
    may take fewer batches. None without a length of the training data."""
    if not batches_per_epoch:
        return None
    steps_per_epoch = max(-(-batches_per_epoch // accumulation), 1)
    whole, left = divmod(max_steps, steps_per_epoch)
    return whole + min(left * accumulation, batches_per_epoch) / batches_per_epoch


def run_epochs(args, state, train_dataloader=None, **_):
    """`epochs_to_train` from a callback's arguments."""
    batches = len(train_dataloader) if hasattr(train_dataloader, "__len__") else None
    return epochs_to_train(state.max_steps, args.gradient_accumulation_steps, batches)


class EpochLines(TrainerCallback):
    """Stands in for the Trainer's PrinterCallback (no progress bars): a short line instead of the dict of
    every metric at each log."""

    training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (self.training and state.is_world_process_zero):
            return
        line = trainer_line(args, state, control, logs, run_epochs(args, state, **kwargs))
        if line:
            logger.info(line)


class EpochLinesUnderBars(ProgressCallback):
    """Stands in for the Trainer's ProgressCallback: its progress bars, with the same short lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and state.is_world_process_zero:
            line = trainer_line(args, state, control, logs, run_epochs(args, state, **kwargs))
            if line:
                self.training_bar.write(line)


def use_short_lines(trainer):
    """Swap the Trainer's own printing callback (bars or not, as --disable_tqdm says) for its short-line
    counterpart; any other display (a notebook's) is left alone."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(EpochLinesUnderBars())
    elif trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(EpochLines())
