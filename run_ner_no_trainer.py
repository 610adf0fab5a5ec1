#!/usr/bin/env python
"""Fine-tune a transformer for token classification with a plain Accelerate training loop.

The flags are those of the upstream `run_ner_no_trainer.py`; it runs the same under `python`,
`accelerate launch` (any `accelerate config`) and `torchrun`, for example:

    accelerate launch run_ner_no_trainer.py --model_name_or_path google-bert/bert-base-cased \
        --dataset_name conll2003 --task_name ner --max_length 128 --per_device_train_batch_size 32 \
        --learning_rate 2e-5 --num_train_epochs 3 --output_dir /tmp/ner/

Everything except the loop (data, labels, alignment, windows, metrics, outputs) is shared with run_ner.py
through the `nerkit` package. See README.md for every flag and file.
"""

import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorForTokenClassification, SchedulerType, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from nerkit.arguments import DataTrainingArguments, ModelArguments, parse_arguments
from nerkit.decoding import forward_batches
from nerkit.errors import UserError, exit_on_user_error
from nerkit.modeling import load_model
from nerkit.outputs import save_results, timing_metrics, write_json, write_predictions
from nerkit.report import command_line, data_sources, save_confusion_matrix, save_learning_curves, write_model_card
from nerkit.speed import automatic_precision, choose_packing, fused_adamw
from nerkit.workflow import (
    check_finite_loss,
    decode_and_score,
    encode_splits,
    load_tokenizer_and_labels,
    read_data,
    setup_logging,
)

logger = logging.getLogger("run_ner_no_trainer")

CHECKPOINT_NAME = re.compile(r"^(step|epoch)_(\d+)$")
LOOP_STATE = "loop_state.json"  # beside accelerate's state in each checkpoint: counters and best score
NOT_INPUTS = ["word_ids", "example_id"]  # feature columns the decoder needs and the model does not take


@dataclass
class NoTrainerModelArguments(ModelArguments):
    """As in run_ner.py, except that a model may also be built from scratch with --model_type."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Path to pretrained model or model identifier from huggingface.co/models."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": "Model type to train from scratch (with --config_name or its defaults, and "
                          "--tokenizer_name) when --model_name_or_path is not given."},
    )


@dataclass
class LoopArguments:
    """The training loop's own flags, spelled as the upstream script spells them."""

    max_length: int = field(default=128, metadata={"help": "Window length in sub-tokens; longer examples are "
                                                           "split into overlapping windows (see --stride)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Batch size per device for evaluation."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Initial learning rate (after warmup)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (not on biases and norms)."})
    num_train_epochs: int = field(default=3, metadata={"help": "Total number of training epochs."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Total number of optimizer steps; overrides --num_train_epochs."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Number of batches to accumulate before an optimizer step."}
    )
    lr_scheduler_type: SchedulerType = field(default="linear", metadata={"help": "The scheduler type to use."})
    num_warmup_steps: int = field(default=0, metadata={"help": "Optimizer steps of linear warmup."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm, as the Trainer (0: off)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where to store the final model."})
    seed: int | None = field(default=None, metadata={"help": "A seed for reproducible training."})
    debug: bool = field(default=False, metadata={"help": "Keep at most 100 examples per split, for a quick run."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the final model to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository to push to (default: "
                                                                     "the output_dir's name)."})
    hub_token: str | None = field(default=None, metadata={"help": "Token to push with; never written to a file."})
    checkpointing_steps: str | None = field(
        default=None,
        metadata={"help": "Save the state every N optimizer steps (step_N folders), or 'epoch' (epoch_N folders)."},
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder to continue from, or 'latest' for the newest one "
                                        "in output_dir."}
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log loss, learning rate and scores to a tracker."})
    report_to: str = field(default="all", metadata={"help": "Tracker for --with_tracking: tensorboard, wandb, "
                                                            "comet_ml, clearml, all..."})
    keep_last: bool = field(
        default=False,
        metadata={"help": "Save the model of the last epoch instead of the epoch with the best validation F1."},
    )

    def __post_init__(self):
        if self.checkpointing_steps not in (None, "epoch") and not str(self.checkpointing_steps).isdigit():
            raise ValueError(f"--checkpointing_steps must be a number of steps or 'epoch', got "
                             f"{self.checkpointing_steps}.")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("--gradient_accumulation_steps must be 1 or more.")


@dataclass
class LoopState:
    """What a resumed run needs besides accelerate's state: where it was and the best score so far."""

    completed_steps: int = 0
    epoch: int = 0
    best_f1: float | None = None
    best_epoch: int | None = None
    best_results: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # per epoch: step, loss, eval_loss, eval_f1 (learning curves)


def main(model_args, data_args, args, command=None):
    accelerator = make_accelerator(args, data_args)
    setup_logging("run_ner_no_trainer", accelerator.is_local_main_process, other_level=logging.ERROR)
    logger.info("Running on %d process(es), device %s.", accelerator.num_processes, accelerator.device)
    check_arguments(model_args, data_args, args)
    resume = checkpoint_to_resume(args, data_args)
    if args.seed is not None:
        set_seed(args.seed)

    splits, declared = read_data(data_args, model_args, {"train": "training"})
    if args.debug:
        splits = {name: split.select(100) for name, split in splits.items()}
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared)
    model = load_model(model_args, config, head_reused)
    settings, features = encode_splits(splits, tokenizer, config, label_list, data_args, args.max_length,
                                       accelerator.main_process_first, flag="--max_length")

    packer = choose_packing(model, tokenizer, features["train"], data_args.packing, data_args.pad_to_max_length,
                            accelerator.device, {"bf16": "bf16", "fp16": "fp16"}.get(accelerator.mixed_precision))
    loaders = make_dataloaders(features, tokenizer, settings, data_args, args, accelerator, packer)
    optimizer = make_optimizer(model, args, accelerator.device.type)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared))
    max_steps, epochs = training_length(len(loaders["train"]), args)
    scheduler = accelerator.prepare(make_scheduler(optimizer, args, max_steps, accelerator.num_processes))
    if args.with_tracking:
        accelerator.init_trackers("ner_no_trainer", tracked_config(model_args, data_args, args))

    state = train(accelerator, model, optimizer, scheduler, loaders, splits, features, label_list, data_args, args,
                  max_steps, epochs, resume)
    base_model = model_args.model_name_or_path or f"a new {model_args.model_type} (trained from scratch)"
    finish(accelerator, model, tokenizer, loaders, splits, features, label_list, data_args, args, state,
           (base_model, command or command_line()))


def make_accelerator(args, data_args):
    tracking = {"log_with": args.report_to, "project_dir": args.output_dir} if args.with_tracking else {}
    # A seedable sampler shuffles by (seed, epoch) alone, so a resumed epoch sees the same order.
    loader_config = DataLoaderConfiguration(use_seedable_sampler=True)
    precision = {}
    # Under torchrun without CUDA, accelerate 1.15 sets up no distributed state unless asked for the CPU.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        precision["cpu"] = True
    # `accelerate launch` always says which precision its configuration chose; plain python does not.
    if data_args.auto_mixed_precision and "ACCELERATE_MIXED_PRECISION" not in os.environ:
        precision["mixed_precision"] = automatic_precision() or "no"
    return Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                       dataloader_config=loader_config, **tracking, **precision)


def check_arguments(model_args, data_args, args):
    if args.output_dir is None:
        raise UserError("Give --output_dir: the folder for the model, the scores and the predictions.")
    if model_args.model_name_or_path is None and model_args.model_type is None:
        raise UserError("Give --model_name_or_path, or --model_type (with --tokenizer_name) to train from scratch.")
    if data_args.max_seq_length is not None:
        raise UserError("run_ner_no_trainer.py sets the window length with --max_length (default 128); "
                        "--max_seq_length is run_ner.py's spelling.")


def checkpoint_to_resume(args, data_args):
    """The checkpoint folder to continue from, or None. A non-empty output_dir is never trained into
    silently: resume from it (--resume_from_checkpoint latest) or --overwrite_output_dir."""
    output_dir = args.output_dir
    if args.resume_from_checkpoint == "latest":
        found = checkpoints_in(output_dir)
        if not found:
            raise UserError(f"--resume_from_checkpoint latest: {output_dir} holds no step_N or epoch_N checkpoint.")
        return found[-1]
    if args.resume_from_checkpoint:
        if not os.path.isfile(os.path.join(args.resume_from_checkpoint, LOOP_STATE)):
            raise UserError(f"--resume_from_checkpoint {args.resume_from_checkpoint} is not a checkpoint folder "
                            "written by this script (step_N or epoch_N with loop_state.json).")
        return args.resume_from_checkpoint
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not data_args.overwrite_output_dir:
        hint = " It holds checkpoints: add --resume_from_checkpoint latest to continue," if checkpoints_in(
            output_dir) else ""
        raise UserError(f"The output folder {output_dir} already exists and is not empty.{hint} Choose another "
                        "--output_dir, or add --overwrite_output_dir to train into it.")
    return None


def checkpoints_in(folder):
    """Checkpoint folders in `folder`, oldest first by the optimizer steps they completed."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if CHECKPOINT_NAME.match(name) and os.path.isfile(os.path.join(path, LOOP_STATE)):
            with open(os.path.join(path, LOOP_STATE), encoding="utf-8") as handle:
                found.append((json.load(handle)["completed_steps"], path))
    return [path for _, path in sorted(found)]


def make_dataloaders(features, tokenizer, settings, data_args, args, accelerator, packer):
    padding = {"padding": "max_length", "max_length": settings.max_length} if data_args.pad_to_max_length else {
        "pad_to_multiple_of": {"fp8": 16, "fp16": 8, "bf16": 8}.get(accelerator.mixed_precision)}
    collator = DataCollatorForTokenClassification(tokenizer, **padding)
    loaders = {}
    for name, split_features in features.items():
        training = name == "train"
        batch_size = args.per_device_train_batch_size if training else args.per_device_eval_batch_size
        # A generator of its own keeps iteration from drawing on the global RNG that dropout uses, so a
        # resumed run (which starts its iterator after restoring that RNG) continues exactly.
        generator = torch.Generator().manual_seed(args.seed or 0)
        loaders[name] = DataLoader(split_features.remove_columns(NOT_INPUTS), shuffle=training,
                                   collate_fn=packer if training and packer else collator, batch_size=batch_size,
                                   generator=generator)
    return loaders


def make_optimizer(model, args, device_type):
    """AdamW without weight decay on biases and normalisation weights; its fused kernel where torch has
    one for the device, as the Trainer's default (see nerkit.speed.fused_adamw)."""
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm", "rmsnorm", "norm"]))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    fused = fused_adamw(device_type)
    logger.info("Optimizer: AdamW%s.", " (fused kernel)" if fused else "")
    return torch.optim.AdamW(groups, lr=args.learning_rate, fused=fused or None)


def training_length(batches_per_epoch, args):
    """(optimizer steps, epochs) for this process's share of the data. An epoch's last accumulation group
    may be short: accelerate steps at the end of the dataloader."""
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    return max_steps, math.ceil(max_steps / steps_per_epoch)


def make_scheduler(optimizer, args, max_steps, num_processes):
    # The prepared scheduler advances once per process at every optimizer step, so both lengths are given
    # in those units: the schedule then fits any number of processes and accumulation steps.
    return get_scheduler(args.lr_scheduler_type, optimizer=optimizer,
                         num_warmup_steps=args.num_warmup_steps * num_processes,
                         num_training_steps=max_steps * num_processes)


def tracked_config(model_args, data_args, args):
    values = {**asdict(model_args), **asdict(data_args), **asdict(args)}
    values.pop("token", None)
    values.pop("hub_token", None)
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in values.items() if value is not None}


def train(accelerator, model, optimizer, scheduler, loaders, splits, features, label_list, data_args, args,
          max_steps, epochs, resume):
    """The loop: accumulate, step, checkpoint; evaluate every epoch and keep the best by validation F1."""
    state = LoopState()
    skip_batches = 0
    if resume:
        state, skip_batches = restore(accelerator, resume, len(loaders["train"]), args)
    if max_steps == 0:  # --num_train_epochs 0: evaluate (and predict) the model as it is
        end_of_epoch(accelerator, model, loaders, splits, features, label_list, data_args, args, state, -1, None, 0.0)
        return state
    progress = tqdm(range(max_steps), initial=state.completed_steps, disable=not accelerator.is_local_main_process)
    started, loss_count, waited = time.time(), 0, 0
    loss_sum = torch.zeros((), device=accelerator.device)  # a tensor even for an epoch resumed at its end
    epoch, train_loss = state.epoch - 1, None  # a run resumed at its very end trains no further epoch
    for epoch in range(state.epoch, epochs):
        model.train()
        loaders["train"].set_epoch(epoch)
        batches = accelerator.skip_first_batches(loaders["train"], skip_batches) if skip_batches else loaders["train"]
        skip_batches = 0
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                check_finite_loss(loss, state.completed_steps + 1)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum, loss_count = loss_sum + loss.detach().float(), loss_count + 1
            if accelerator.sync_gradients:
                state.completed_steps += 1
                progress.update(1)
                if args.checkpointing_steps not in (None, "epoch") and \
                        state.completed_steps % int(args.checkpointing_steps) == 0:
                    save_checkpoint(accelerator, args.output_dir, f"step_{state.completed_steps}", state, epoch)
                if state.completed_steps >= max_steps:
                    break
        train_loss = accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean").item()
        improved = end_of_epoch(accelerator, model, loaders, splits, features, label_list, data_args, args, state,
                                epoch, train_loss, scheduler.get_last_lr()[0])
        waited = 0 if improved is not False else waited + 1
        if args.checkpointing_steps == "epoch":
            save_checkpoint(accelerator, args.output_dir, f"epoch_{epoch}", state, epoch + 1)
        if state.completed_steps >= max_steps or stop_early(waited, data_args, epoch):
            break
    state.epoch = epoch + 1
    state.best_results.update(timing_metrics("train", time.time() - started, len(splits["train"].tokens) * state.epoch,
                                      state.completed_steps),
                              train_loss=train_loss, epoch=float(state.epoch),
                              train_samples=len(splits["train"].tokens))
    return state


def end_of_epoch(accelerator, model, loaders, splits, features, label_list, data_args, args, state, epoch,
                 train_loss, learning_rate):
    """Evaluate, log, and save the model when its validation F1 is the best so far (or always with
    --keep_last, or when there is no validation split). Returns whether this epoch improved (None without
    a validation split)."""
    results = {}
    if "validation" in loaders:
        started = time.time()
        _, _, scores = evaluate(model, loaders["validation"], accelerator, splits["validation"],
                                features["validation"], label_list, data_args)
        results = {f"eval_{key}": value for key, value in scores.items()}
        results.update(timing_metrics("eval", time.time() - started, len(splits["validation"].tokens),
                               len(loaders["validation"])))
        logger.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in results.items()}))
    if args.with_tracking:
        accelerator.log(dict(results, train_loss=train_loss, learning_rate=learning_rate, epoch=epoch),
                        step=state.completed_steps)
    state.history.append({"step": state.completed_steps, "loss": train_loss, "eval_loss": results.get("eval_loss"),
                          "eval_f1": results.get("eval_f1")})
    f1 = results.get("eval_f1")
    threshold = data_args.early_stopping_threshold
    improved = f1 is not None and (state.best_f1 is None or f1 > state.best_f1 + threshold)
    if improved or args.keep_last or f1 is None:
        state.best_f1 = f1 if improved else state.best_f1
        state.best_epoch, state.best_results = epoch, dict(results)
        save_model(accelerator, model, args.output_dir)
    return improved if f1 is not None else None


def stop_early(waited, data_args, epoch):
    patience = data_args.early_stopping_patience
    if patience is not None and waited >= patience:
        logger.info("Stopping after epoch %d: validation F1 has not improved for %d epochs.", epoch, waited)
        return True
    return False


def evaluate(model, loader, accelerator, split, split_features, label_list, data_args):
    model.eval()
    return decode_and_score(forward_batches(model, loader), accelerator, split, split_features, label_list,
                            data_args)


def save_model(accelerator, model, output_dir):
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
                              state_dict=accelerator.get_state_dict(model))


def save_checkpoint(accelerator, output_dir, name, state, next_epoch):
    """accelerate's state (model, optimizer, scheduler, RNG) plus our counters, in output_dir/name."""
    path = os.path.join(output_dir, name)
    accelerator.save_state(path)
    if accelerator.is_main_process:
        write_json(os.path.join(path, LOOP_STATE), asdict(state) | {"epoch": next_epoch})
    accelerator.wait_for_everyone()


def restore(accelerator, path, batches_per_epoch, args):
    """Load a checkpoint; returns (LoopState, batches of the current epoch already trained on)."""
    logger.info("Resuming from %s", path)
    accelerator.load_state(path)
    with open(os.path.join(path, LOOP_STATE), encoding="utf-8") as handle:
        state = LoopState(**json.load(handle))
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    done_in_epoch = state.completed_steps - state.epoch * steps_per_epoch
    return state, max(done_in_epoch, 0) * args.gradient_accumulation_steps


def finish(accelerator, model, tokenizer, loaders, splits, features, label_list, data_args, args, state, origin):
    """Final model (the best epoch's, or the last with --keep_last), results, reports, predictions, push.
    `origin` is (base model, command) for the model card."""
    if state.best_epoch is None:
        save_model(accelerator, model, args.output_dir)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(args.output_dir)
        logger.info("Kept the model of epoch %s.", state.best_epoch)
        eval_results = {k: v for k, v in state.best_results.items() if k.startswith("eval_")}
        train_results = {k: v for k, v in state.best_results.items() if k not in eval_results}
        if train_results:
            save_results(args.output_dir, "train", train_results)
        if eval_results:
            save_results(args.output_dir, "eval", dict(eval_results, epoch=float(state.best_epoch + 1)))
    accelerator.wait_for_everyone()  # the main process has written the kept model
    kept = accelerator.prepare(transformers.AutoModelForTokenClassification.from_pretrained(args.output_dir))
    report(accelerator, kept, loaders, splits, features, label_list, data_args, args, state, origin)
    if "test" in loaders:
        predict(accelerator, kept, loaders["test"], splits["test"], features["test"], label_list, data_args, args)
    if args.with_tracking:
        accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        push(args)


def report(accelerator, model, loaders, splits, features, label_list, data_args, args, state, origin):
    """Model card, confusion matrix (on the kept model's validation labels) and learning curves."""
    gold = predicted = None
    if "validation" in loaders:
        predicted, _, _ = evaluate(model, loaders["validation"], accelerator, splits["validation"],
                                   features["validation"], label_list, data_args)
        gold = splits["validation"].tags
    if not accelerator.is_main_process:
        return
    base_model, command = origin
    write_model_card(args.output_dir, base_model, data_sources(data_args), label_list, command, gold, predicted,
                     data_args.metric_mode)
    if gold is not None:
        save_confusion_matrix(args.output_dir, gold, predicted)
    save_learning_curves(args.output_dir, state.history)


def predict(accelerator, model, loader, split, split_features, label_list, data_args, args):
    """Predict the test split with the kept model; write predictions and predict_results.json."""
    started = time.time()
    tags, probabilities, scores = evaluate(model, loader, accelerator, split, split_features, label_list, data_args)
    if accelerator.is_main_process:
        metrics = {f"predict_{key}": value for key, value in scores.items()}
        metrics.update(timing_metrics("predict", time.time() - started, len(split.tokens), len(loader)))
        save_results(args.output_dir, "predict", metrics)
        write_predictions(args.output_dir, split, tags, probabilities)


def push(args):
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
    repo_id = api.create_repo(repo_id, exist_ok=True).repo_id
    api.upload_folder(folder_path=args.output_dir, repo_id=repo_id, commit_message="End of training",
                      ignore_patterns=["step_*", "epoch_*"])


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments((NoTrainerModelArguments, DataTrainingArguments, LoopArguments), argv)
    main(*arguments, command=command_line(["run_ner_no_trainer.py", *argv]))


if __name__ == "__main__":
    exit_on_user_error(cli)
