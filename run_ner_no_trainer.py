#!/usr/bin/env python
"""Fine-tune a transformer for token classification with a plain Accelerate training loop.

The flags are those of the upstream `run_ner_no_trainer.py`; it runs the same under `python`,
`accelerate launch` (any `accelerate config`) and `torchrun`, for example:

    accelerate launch run_ner_no_trainer.py --model_name_or_path google-bert/bert-base-cased \
        --dataset_name conll2003 --task_name ner --max_length 128 --per_device_train_batch_size 32 \
        --learning_rate 2e-5 --num_train_epochs 3 --output_dir /tmp/ner/

Everything except the loop (data, labels, alignment, windows, metrics, outputs) is shared with run_ner.py
through the `nerkit` package. See README.md for every flag and file. Other programs call `main()` as
upstream's example tests do: with no arguments it reads `sys.argv`.
"""

import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field

from nerkit.startup import (collection_paused, end_of_group_run, end_of_script, keep_until_exit,
                            quiet_interrupt_while_importing)

if __name__ == "__main__":
    quiet_interrupt_while_importing()

with collection_paused():  # the libraries' objects live as long as the process (nerkit/startup.py)
    import torch
    from accelerate import Accelerator
    from accelerate.utils import (DataLoaderConfiguration, DistributedDataParallelKwargs, DistributedType,
                                   broadcast_object_list, set_seed)
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import DataCollatorForTokenClassification, SchedulerType, get_scheduler
    from transformers.trainer_pt_utils import get_parameter_names
    from transformers.trainer_utils import load_sharded_checkpoint
    from transformers.utils import SAFE_WEIGHTS_NAME

    from nerkit.arguments import DataTrainingArguments, ModelArguments, at_least, check_run_arguments, parse_arguments
    from nerkit.clipping import clip_gradients
    from nerkit.datacheck import check_data
    from nerkit.decoding import forward_batches
    from nerkit.embedding_rows import fold_rows, flops_per_input_token, record_rows, train_used_rows, why_whole_table
    from nerkit.errors import UserError, exit_on_user_error
    from nerkit.hub import PushTarget, check_hub_for_training, push_failure
    from nerkit.modeling import check_checkpoint_weights, load_model, needs_unused_parameter_search
    from nerkit.outputs import (check_model_survives_clearing, clear_earlier_run, prediction_metrics, save_results,
                                timing_metrics, write_json)
    from nerkit.progress import Best, interactive, progress_line
    from nerkit.report import (
        CardFacts,
        CardScores,
        command_line,
        data_sources,
        hub_dataset,
        launch_settings,
        save_confusion_matrix,
        save_error_analysis,
        save_learning_curves,
        save_test_predictions,
        script_as_run,
        write_model_card,
    )
    from nerkit.resume import (LOOP_STATE, TrainBatch, TrainingData, check_checkpoint_readable, check_same_train_batch,
                               check_same_training_data, in_folder, record_train_batch)
    from nerkit.schemes import model_scheme
    from nerkit.speed import (
        check_bf16_runs,
        check_cpu_processes_beside_gpus,
        choose_training_speedups,
        decide_precision,
        fresh_accelerator,
        fused_adamw,
        log_precision,
        longest_input,
        pad_multiple,
        prepare_device,
        run_device_type,
    )
    from nerkit.tokenization import DECODER_COLUMNS
    from nerkit.workflow import (
        check_finite_loss,
        decode_and_score,
        encode_splits,
        encoding_settings,
        inference_batching,
        load_tokenizer_and_labels,
        read_data,
        setup_logging,
    )

logger = logging.getLogger("run_ner_no_trainer")

CHECKPOINT_NAME = re.compile(r"^(step|epoch)_(\d+)$")
SCORED = {"train": "training", "validation": "the evaluation after every epoch"}  # splits that need tags
TIMING_KEYS = ("_runtime", "_samples", "_samples_per_second", "_steps_per_second")  # of nerkit.outputs.timing_metrics


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
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip gradients to this norm before each optimizer step (default: no "
                                        "clipping, as upstream's loop; the Trainer clips at 1.0)."}
    )
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
    report_to: str = field(default="all", metadata={"help": "Trackers for --with_tracking, separated by commas: "
                                                            "tensorboard, wandb, comet_ml, mlflow, ...; all (every "
                                                            "one installed) or none."})
    load_best_model_at_end: bool = field(
        default=False,
        metadata={"help": "Save (and predict with) the model of the epoch with the best validation F1 instead of "
                          "the last epoch's, as run_ner.py's flag with --metric_for_best_model f1; its scores are "
                          "reported as best_*. Needed by --early_stopping_patience."},
    )

    def __post_init__(self):
        steps = self.checkpointing_steps
        if steps not in (None, "epoch") and not (str(steps).isdigit() and int(steps) > 0):
            raise ValueError(f"--checkpointing_steps must be a number of steps (1 or more) or 'epoch', got {steps}.")


@dataclass
class LoopState:
    """What a resumed run needs besides accelerate's state: where it was, how long it has trained, the
    early-stopping count and every epoch's scores, so it ends exactly as an uninterrupted run would."""

    completed_steps: int = 0
    epoch: int = 0  # epochs finished, which is also the index of the epoch being trained
    train_seconds: float = 0.0  # time spent training (evaluations included) by the processes before this one
    waited: int = 0  # epochs since the validation F1 last improved (--early_stopping_patience)
    epoch_loss: float = 0.0  # sum of the current epoch's batch losses so far (each a mean over processes)
    epoch_batches: int = 0  # and their number: a run resumed mid-epoch reports the whole epoch's mean loss
    best_f1: float | None = None
    best_epoch: int | None = None  # epochs trained when that F1 was scored
    total_flos: float = 0.0  # the Trainer's estimate of the operations trained so far, every process's
    history: list = field(default_factory=list)  # per epoch: epoch, step, loss and the eval_* results


@dataclass
class Run:
    """What the loop's steps share: the launcher, the prepared model, optimizer, scheduler and dataloaders,
    the data they come from, the label names and the flags."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loaders: dict
    splits: dict
    features: dict
    label_list: list
    data_args: DataTrainingArguments
    args: LoopArguments
    flops_per_token: int = 0  # nerkit.embedding_rows.flops_per_input_token of the model
    train_data: TrainingData | None = None  # the training examples as each checkpoint records them (nerkit.resume)

    @property
    def scheme(self):
        """The tagging scheme decoding and strict scoring follow: the one saved in the model's config."""
        return model_scheme(self.accelerator.unwrap_model(self.model).config)


def main(model_args=None, data_args=None, args=None, command=None):
    """Train (and evaluate, predict) as the parsed arguments say. Called with none (as upstream's example
    tests and xla_spawn call it), it parses `sys.argv` exactly as the command line does. A `UserError`
    reaches the caller; `cli` turns it into a message and exit status 2."""
    if model_args is None and data_args is None and args is None:
        model_args, data_args, args, command = parse_command_line(sys.argv[1:])
    check_arguments(model_args, data_args, args)
    accelerator, precision = make_accelerator(args, data_args)
    setup_logging("run_ner_no_trainer", accelerator.is_local_main_process)
    logger.info("Running on %d process(es), device %s.", accelerator.num_processes, accelerator.device)
    warn_if_untracked(args)
    training = trains(args)
    check_hub_for_training(model_args, data_args, PushTarget.of(args))
    if data_args.check_data:
        check_data(model_args, data_args, args.output_dir, args.max_length, "--max_length", accelerator.is_main_process)
        return
    prepare_device(accelerator.device.type)
    resume = checkpoint_to_resume(args, data_args, train_batch(args, accelerator))
    if args.seed is not None:
        set_seed(args.seed)
    elif resume:  # the shuffling seed drawn when the run began, for the same order of the epochs left
        accelerator.dataloader_config.data_seed = saved_data_seed(resume, accelerator.dataloader_config.data_seed)

    splits, declared = read_data(data_args, model_args, {"train": "training"} if training else {}, scored=SCORED)
    if args.debug:
        splits = {name: split.select(100) for name, split in splits.items()}
    check_keeping_best(accelerator, args, splits)
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared,
                                                                           training)
    settings = encoding_settings(tokenizer, config, label_list, data_args, args.max_length, flag="--max_length")
    features = encode_splits(splits, tokenizer, config, settings, data_args, accelerator.main_process_first)
    train_data = TrainingData.of(splits, features)
    if resume and train_data:  # before the weights load
        check_same_training_data(resume, train_data, "--max_length")
        check_continues(resume, planned_steps(len(features["train"]), args, accelerator.num_processes), args)
    model = load_model(model_args, config, head_reused, training)
    fallback = check_bf16_runs(precision, model, longest_input(features), accelerator.device.type)
    if fallback is not precision:  # the model fails in the automatic bf16: an Accelerator in fp32 instead
        accelerator, precision = make_accelerator(args, data_args, fallback)
    log_precision(accelerator, precision, "Training" if training else "Inference")

    packer = choose_training_speedups(model, tokenizer, features["train"] if training else None, data_args,
                                      accelerator.device, accelerator.mixed_precision)
    if training:
        if data_args.train_used_embedding_rows:
            choose_embedding_rows(model, tokenizer.pad_token_id, features["train"], args, accelerator, resume)
        choose_ddp_unused_parameters(accelerator, model)
    loaders = make_dataloaders(features, tokenizer, settings, data_args, args, accelerator, packer)
    optimizer = make_optimizer(model, args, accelerator.device.type, training)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared))
    max_steps, epochs = training_length(len(loaders["train"]), args) if training else (0, 0)
    scheduler = accelerator.prepare(make_scheduler(optimizer, args, max_steps, accelerator.num_processes))
    if args.with_tracking:
        accelerator.init_trackers("ner_no_trainer", tracked_config(model_args, data_args, args))

    run = Run(accelerator, model, optimizer, scheduler, loaders, splits, features, label_list, data_args, args,
              flops_per_input_token(accelerator.unwrap_model(model)), train_data)
    state, kept_tags = train(run, max_steps, epochs, resume)
    fold_rows(accelerator.unwrap_model(run.model))
    base_model = model_args.model_name_or_path or f"a new {model_args.model_type} (trained from scratch)"
    finish(run, tokenizer, state, kept_tags, (base_model, command or command_line()))
    keep_until_exit(run)


def make_accelerator(args, data_args, precision=None):
    """(the run's Accelerator, its Precision): `precision`, else what nerkit.speed.decide_precision chooses."""
    log_with = trackers(args.report_to) if args.with_tracking else None
    tracking = {"log_with": log_with, "project_dir": args.output_dir} if log_with else {}
    # A seedable sampler shuffles by (seed, epoch) alone, so a resumed epoch sees the same order.
    loader_config = DataLoaderConfiguration(use_seedable_sampler=True)
    # Under torchrun on the CPU, accelerate 1.15 sets up no distributed state unless asked for the CPU.
    on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and run_device_type() == "cpu"
    # No precision flag of its own: `accelerate launch` passes its configuration's, or the automatic choice.
    precision = precision or decide_precision(None, data_args.auto_mixed_precision, use_cpu=on_cpu)
    accelerator = fresh_accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                                    dataloader_config=loader_config, mixed_precision=precision.mixed_precision,
                                    **({"cpu": True} if on_cpu else {}), **tracking)
    # Without a data seed the seedable sampler takes torch's initial seed, which without --seed differs from
    # process to process: each would shuffle its own way, and an epoch would train some examples on both
    # processes and others on neither. All take one seed (prepare() reads it, so setting it here is in time).
    loader_config.data_seed = shared_seed(args.seed)
    return accelerator, precision


def warn_if_untracked(args):
    """Upstream's loop reads --report_to only with --with_tracking: trackers named without it track nothing."""
    if not args.with_tracking and args.report_to not in ("all", "none"):  # "all" is the default, given or not
        logger.warning("--report_to %s is read only with --with_tracking, which is not given: nothing is tracked. "
                       "Add --with_tracking to track the run.", args.report_to)


def trackers(report_to):
    """--report_to as accelerate's `log_with`: "all" (every tracker installed), names separated by commas, or
    "none" (nothing tracked, as in run_ner.py). An unknown or uninstalled tracker is a UserError."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if not names or names == ["none"]:
        return None
    if "all" in names:
        return "all"
    known, installed = {str(kind) for kind in LoggerType} - {"all"}, {str(kind) for kind in get_available_trackers()}
    for name in names:
        if name not in known:
            raise UserError(f"--report_to {report_to}: {name!r} is not a tracker accelerate knows; give one or more "
                            f"of {', '.join(sorted(known))} (separated by commas), all, or none.")
        if name not in installed:
            raise UserError(f"--report_to {report_to}: {name} is not installed here; install it (pip install {name}), "
                            "or give a tracker that is (--report_to all uses every one installed) or none.")
    return names


def saved_data_seed(checkpoint, drawn):
    """The data seed a checkpoint's run shuffled with (without --seed, drawn when it began), or `drawn` for a
    checkpoint written before the seed was kept."""
    with open(os.path.join(checkpoint, LOOP_STATE), encoding="utf-8") as handle:
        return json.load(handle).get("data_seed", drawn)


def shared_seed(seed):
    """`seed`, or without one process 0's random initial seed, the same on every process."""
    if seed is not None:
        return seed
    return broadcast_object_list([torch.random.initial_seed()])[0]


def trains(args):
    """Whether the run trains: --num_train_epochs 0 (without --max_train_steps) only evaluates and predicts."""
    return bool(args.max_train_steps or args.num_train_epochs)


def check_arguments(model_args, data_args, args):
    """Flag values and combinations that would otherwise fail after the model loads or after training; the
    rules run_ner.py shares are in nerkit.arguments.check_run_arguments."""
    check_run_arguments(data_args, args)
    check_cpu_processes_beside_gpus()
    at_least("--max_train_steps", args.max_train_steps, 1)  # 0 would silently mean "not given"
    if model_args.model_name_or_path is None and model_args.model_type is None:
        raise UserError("Give --model_name_or_path, or --model_type (with --tokenizer_name) to train from scratch.")
    check_model_survives_clearing(model_args.model_name_or_path, args.output_dir, data_args.overwrite_output_dir,
                                  is_checkpoint_name)
    if data_args.max_seq_length is not None:
        raise UserError("run_ner_no_trainer.py sets the window length with --max_length (default 128); "
                        "--max_seq_length is run_ner.py's spelling.")
    if args.push_to_hub and not trains(args) and not data_args.check_data:
        raise UserError("--push_to_hub with --num_train_epochs 0: the run only scores the model given, and saves no "
                        "model to push. Train (--num_train_epochs above 0), or push that model's folder itself.")
    if data_args.early_stopping_patience is not None and not args.load_best_model_at_end:
        raise UserError("--early_stopping_patience needs --load_best_model_at_end (as in run_ner.py): otherwise the "
                        "saved model would be the last one, trained past the best epoch.")


def check_keeping_best(accelerator, args, splits):
    """--load_best_model_at_end compares the validation F1 of every epoch and loads the best weights back into
    the model at the end, which needs whole (not sharded) parameters on every process."""
    if not args.load_best_model_at_end:
        return
    if "validation" not in splits or splits["validation"].tags is None:
        raise UserError("--load_best_model_at_end keeps the epoch with the best validation F1: give a labelled "
                        "--validation_file (or a dataset with a labelled 'validation' split).")
    plugin = accelerator.state.deepspeed_plugin
    if accelerator.distributed_type == DistributedType.FSDP or (plugin is not None and plugin.zero_stage == 3):
        raise UserError("--load_best_model_at_end is not supported with sharded parameters (FSDP, DeepSpeed ZeRO-3) "
                        "in run_ner_no_trainer.py: use run_ner.py, or train without it (the last epoch is saved).")


def checkpoint_to_resume(args, data_args, batch):
    """The checkpoint folder to continue from, or None. A non-empty output_dir is never trained into
    silently: resume from it (--resume_from_checkpoint latest, or one of its checkpoints) or
    --overwrite_output_dir. The checkpoint must have been trained with this run's `batch` of examples a
    step (nerkit.resume)."""
    output_dir, given = args.output_dir, args.resume_from_checkpoint
    if given == "latest":
        found = checkpoints_in(output_dir)
        if not found:
            raise UserError(f"--resume_from_checkpoint latest: {output_dir} holds no step_N or epoch_N checkpoint.")
        given = found[-1]
    elif given:
        if not os.path.isdir(given):
            raise UserError(f"--resume_from_checkpoint {given} does not exist. Give a step_N or epoch_N folder of an "
                            "earlier run, or 'latest' for the newest in --output_dir.")
        if not os.path.isfile(os.path.join(given, LOOP_STATE)):
            raise UserError(f"--resume_from_checkpoint {given} is not a checkpoint folder written by this script "
                            "(step_N or epoch_N with loop_state.json).")
    if not (given and in_folder(given, output_dir)):  # a checkpoint of the run in output_dir continues that run
        check_output_dir_unused(output_dir, data_args.overwrite_output_dir, given)
    if given:
        check_checkpoint_readable(given)
        check_same_train_batch(given, batch)
    return given or None


def check_output_dir_unused(output_dir, overwrite, given=None):
    """Refuse a non-empty output_dir without --overwrite_output_dir, saying what it holds. `given`: the
    checkpoint from elsewhere this run resumes from, for the message."""
    if overwrite or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return
    if os.path.isfile(os.path.join(output_dir, "train_results.json")):  # written once training is over
        hint = (" It holds a finished run (train_results.json): resuming it would train nothing; to evaluate or "
                f"predict with its model, give --model_name_or_path {output_dir} --num_train_epochs 0 and another "
                "--output_dir.")
    elif checkpoints_in(output_dir):
        hint = (" It holds checkpoints: add --resume_from_checkpoint latest to continue (or to finish a run killed "
                "after its last step).")
    else:
        hint = ""
    over = f" Resuming {given} would write this run over what it holds." if given else ""
    raise UserError(f"The output folder {output_dir} already exists and is not empty.{hint}{over} "
                    f"{'Otherwise choose' if hint else 'Choose'} another --output_dir, or add "
                    "--overwrite_output_dir to train into it from the start.")


def train_batch(args, accelerator):
    """The examples of one optimizer step (nerkit.resume.TrainBatch)."""
    return TrainBatch(args.per_device_train_batch_size, args.gradient_accumulation_steps, accelerator.num_processes)


def is_checkpoint_name(name):
    return CHECKPOINT_NAME.match(name) is not None


def checkpoints_in(folder):
    """Checkpoint folders in `folder`, oldest first by the optimizer steps they completed; one without a
    whole loop_state.json (written last) is skipped with a warning."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not CHECKPOINT_NAME.match(name) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, LOOP_STATE), encoding="utf-8") as handle:
                found.append((int(json.load(handle)["completed_steps"]), path))
        except FileNotFoundError:  # the run stopped while saving it
            logger.warning("Skipping the incomplete checkpoint %s (no %s).", path, LOOP_STATE)
        except (OSError, ValueError, KeyError, TypeError):  # not whole: never resumed from
            logger.warning("Skipping the checkpoint %s: its %s cannot be read.", path, LOOP_STATE)
    return [path for _, path in sorted(found)]


def choose_ddp_unused_parameters(accelerator, model):
    """accelerate builds DDP without its search for unused parameters, and DDP then stops a model that has
    some at its second step with a traceback: where the model has some (nerkit.modeling), DDP searches, as
    the Trainer has it do. Read when prepare() wraps the model."""
    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA, DistributedType.MEGATRON_LM)
    if accelerator.num_processes > 1 and accelerator.distributed_type not in sharded and \
            needs_unused_parameter_search(model):
        accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)


def make_dataloaders(features, tokenizer, settings, data_args, args, accelerator, packer):
    padding = {"padding": "max_length", "max_length": settings.max_length} if data_args.pad_to_max_length else {
        "pad_to_multiple_of": pad_multiple(accelerator.mixed_precision)}
    collator = DataCollatorForTokenClassification(tokenizer, **padding)
    loaders = {}
    for name, split_features in features.items():
        training = name == "train"
        batch_size = args.per_device_train_batch_size if training else args.per_device_eval_batch_size
        # A generator of its own keeps iteration from drawing on the global RNG that dropout uses, so a
        # resumed run (which starts its iterator after restoring that RNG) continues exactly.
        generator = torch.Generator().manual_seed(args.seed or 0)
        batching = {"batch_size": batch_size, "shuffle": True} if training else \
            inference_batching(split_features, batch_size, accelerator.num_processes)
        loaders[name] = DataLoader(split_features.remove_columns(DECODER_COLUMNS),
                                   collate_fn=packer if training and packer else collator, generator=generator,
                                   **batching)
    return loaders


def choose_embedding_rows(model, pad_token_id, train_features, args, accelerator, resume):
    """Train only the word-embedding rows the training data uses, where that is the same training
    (nerkit.embedding_rows): make_optimizer's AdamW, with --weight_decay 0 (the default)."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    why_not = why_whole_table(model, "adamw_torch", args.weight_decay, sharded)
    train_used_rows(model, train_features, pad_token_id, why_not, resume)


def make_optimizer(model, args, device_type, training=True):
    """AdamW without weight decay on biases and normalisation weights; its fused kernel where torch has
    one for the device, as the Trainer's default (see nerkit.speed.fused_adamw)."""
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], ["bias", "layernorm", "rmsnorm", "norm"]))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    fused = fused_adamw(device_type)
    if training:
        logger.info("Optimizer: AdamW%s.", " (fused kernel)" if fused else "")
    return torch.optim.AdamW(groups, lr=args.learning_rate, fused=fused or None)


def steps_per_epoch(batches_per_epoch, args):
    """Optimizer steps in an epoch of this process's share of the data. An epoch's last accumulation group
    may be short: accelerate steps at the end of the dataloader."""
    return math.ceil(batches_per_epoch / args.gradient_accumulation_steps)


def training_length(batches_per_epoch, args):
    """(optimizer steps, epochs) for this process's share of the data."""
    per_epoch = steps_per_epoch(batches_per_epoch, args)
    max_steps = args.max_train_steps or args.num_train_epochs * per_epoch
    return max_steps, math.ceil(max_steps / per_epoch)


def planned_steps(train_examples, args, num_processes):
    """The run's optimizer steps, known before the model and the dataloaders exist: accelerate deals each
    epoch's batches out to the processes evenly (the last round padded), as the prepared loader will."""
    batches = math.ceil(math.ceil(train_examples / args.per_device_train_batch_size) / num_processes)
    return training_length(batches, args)[0]


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


def train(run, max_steps, epochs, resume):
    """The loop: accumulate, step, checkpoint; evaluate every epoch. Returns the LoopState and the validation
    word labels of the kept epoch (None when that epoch was scored before this process resumed)."""
    state, skip_batches = restore(run, resume, max_steps) if resume else (LoopState(), 0)
    if resume is None and run.accelerator.is_main_process:
        clear_earlier_run(run.args.output_dir, is_checkpoint_name)
    if resume and stop_early(state, run.data_args):  # resumed from the epoch that stopped the run: only finish it
        return state, None
    if max_steps == 0:  # --num_train_epochs 0: evaluate (and predict) the model as it is
        return state, end_of_epoch(run, state, None)
    progress = tqdm(range(max_steps), initial=state.completed_steps,
                    disable=not (run.accelerator.is_local_main_process and interactive()))
    started, kept_tags = time.time(), None
    for epoch in range(state.epoch, epochs):
        train_loss = train_epoch(run, state, skip_batches, max_steps, progress, started)
        skip_batches = 0
        state.epoch = epoch + 1
        tags = end_of_epoch(run, state, train_loss)
        if kept_epoch(state, run.args) == state.epoch:
            kept_tags = tags
        if run.args.checkpointing_steps == "epoch":
            save_checkpoint(run, f"epoch_{epoch}", state, started)
        if state.completed_steps >= max_steps or stop_early(state, run.data_args):
            break
    state.train_seconds += time.time() - started
    return state, kept_tags


def train_epoch(run, state, skip_batches, max_steps, progress, started):
    """One pass over the training data (the part not yet trained on, after a resume); returns its mean
    training loss over every process."""
    accelerator, model, args = run.accelerator, run.model, run.args
    model.train()
    run.loaders["train"].set_epoch(state.epoch)
    batches = run.loaders["train"]
    if state.completed_steps >= max_steps:  # resumed at the run's last step: the epoch only ends
        batches = []
    elif skip_batches:
        batches = accelerator.skip_first_batches(batches, skip_batches)
    loss_sum = torch.tensor(state.epoch_loss, device=accelerator.device)  # on the device: no sync per batch
    loss_count, tokens = state.epoch_batches, 0
    for batch in batches:
        tokens += batch["input_ids"].numel()
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            check_finite_loss(loss, state.completed_steps + 1, accelerator)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                clip_gradients(model.parameters(), args.max_grad_norm, run.optimizer, accelerator)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad()
        loss_sum, loss_count = loss_sum + loss.detach().float(), loss_count + 1
        if accelerator.sync_gradients:
            state.completed_steps += 1
            progress.update(1)
            if args.checkpointing_steps not in (None, "epoch") and \
                    state.completed_steps % int(args.checkpointing_steps) == 0:
                state.epoch_loss = accelerator.reduce(loss_sum, reduction="mean").item()
                state.epoch_batches = loss_count
                tokens = count_flos(run, state, tokens)
                save_checkpoint(run, f"step_{state.completed_steps}", state, started)
            if state.completed_steps >= max_steps:
                break
    state.epoch_loss, state.epoch_batches = 0.0, 0
    count_flos(run, state, tokens)
    return accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean").item()


def count_flos(run, state, tokens):
    """Add to `state.total_flos` the operations of `tokens` input positions trained on by each process since
    the last count (the Trainer's total_flos, summed over processes); returns 0, the count to go on from."""
    trained = run.accelerator.reduce(torch.tensor(tokens, device=run.accelerator.device), reduction="sum").item()
    state.total_flos += float(trained * run.flops_per_token)
    return 0


def end_of_epoch(run, state, train_loss):
    """Evaluate, log and record the epoch just finished (`state.epoch` epochs trained); with
    --load_best_model_at_end, save the model when its validation F1 is the best so far. Returns the validation
    word labels, or None without a validation split."""
    results, tags = {}, None
    per_epoch = run_steps_per_epoch(run)
    if "validation" in run.loaders:
        started = time.time()
        tags, _, scores = evaluate(run, "validation")
        results = {f"eval_{key}": value for key, value in scores.items()}
        results.update(timing_metrics("eval", time.time() - started, len(run.splits["validation"].tokens),
                                      len(run.loaders["validation"])))
    if run.args.with_tracking:
        run.accelerator.log(dict(results, train_loss=train_loss, learning_rate=run.scheduler.get_last_lr()[0],
                                 epoch=epochs_at(state.completed_steps, per_epoch)), step=state.completed_steps)
    state.history.append({"epoch": state.epoch, "step": state.completed_steps, "loss": train_loss, **results})
    f1 = results.get("eval_f1")
    if f1 is not None:
        improved = state.best_f1 is None or f1 > state.best_f1 + run.data_args.early_stopping_threshold
        state.waited = 0 if improved else state.waited + 1
        if improved:
            state.best_f1, state.best_epoch = f1, state.epoch
            if run.args.load_best_model_at_end:
                save_model(run)
    if "validation" in run.loaders:  # after the best is updated: with --early_stopping_threshold it is the epoch
        # kept, which a higher F1 short of the threshold does not replace
        logger.info("%s", progress_line(epochs_at(state.completed_steps, per_epoch), dict(results, loss=train_loss),
                                        best=best_so_far(state, per_epoch)))
    return tags


def best_so_far(state, per_epoch):
    """The Best (epochs trained, validation F1) epoch so far, as the run keeps it; None before one."""
    best = best_entry(state)
    return None if best is None or state.best_f1 is None else Best(epochs_at(best["step"], per_epoch), state.best_f1)


def best_entry(state):
    """The history entry (epoch, step, loss, eval_*) of the best epoch so far, or None."""
    return next((entry for entry in state.history if entry["epoch"] == state.best_epoch), None)


def kept_epoch(state, args):
    """The epoch whose model is saved: the last, or with --load_best_model_at_end the best by validation F1."""
    if args.load_best_model_at_end and state.best_epoch is not None:
        return state.best_epoch
    return state.epoch


def run_steps_per_epoch(run):
    """Optimizer steps in an epoch of this run's training data (None when it trains on none)."""
    return steps_per_epoch(len(run.loaders["train"]), run.args) if "train" in run.loaders else None


def epochs_at(step, per_epoch):
    """The epochs trained at optimizer step `step`, as train_results.json's `epoch` counts them: fractional
    where --max_train_steps ends inside an epoch (1.5)."""
    return step / per_epoch if per_epoch else 0.0


def stop_early(state, data_args):
    patience = data_args.early_stopping_patience
    if patience is not None and state.waited >= patience:
        logger.info("Stopping after epoch %d: validation F1 has not improved for %d epochs.", state.epoch,
                    state.waited)
        return True
    return False


def evaluate(run, split_name):
    run.model.eval()
    return decode_and_score(forward_batches(run.model, run.loaders[split_name]), run.accelerator,
                            run.splits[split_name], run.features[split_name], run.label_list, run.data_args,
                            run.scheme)


def save_model(run):
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(run.model)
    unwrapped.save_pretrained(run.args.output_dir, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, state_dict=accelerator.get_state_dict(run.model))


def load_saved_weights(run):
    """Load the weights save_model wrote to output_dir back into the model in place, as the Trainer's
    load_best_model_at_end does: the same model object (remote code included), no second copy on the device."""
    run.accelerator.wait_for_everyone()  # the main process has written them
    model, folder = run.accelerator.unwrap_model(run.model), run.args.output_dir
    single = os.path.join(folder, SAFE_WEIGHTS_NAME)
    if os.path.isfile(single):
        result = model.load_state_dict(load_file(single, device="cpu"), strict=False)
    else:
        result = load_sharded_checkpoint(model, folder, strict=False)
    if result.unexpected_keys or result.missing_keys:  # tied weights are saved once and may be missing here
        logger.warning("Loading the kept weights: missing %s, unexpected %s.", result.missing_keys,
                       result.unexpected_keys)


def save_checkpoint(run, name, state, started):
    """accelerate's state (model, optimizer, scheduler, RNG) plus our counters, the word-embedding rows
    trained and the batch (nerkit.resume), in output_dir/name. `started` is when this process began
    training: the time so far is stored for a resumed run's runtime."""
    accelerator = run.accelerator
    path = os.path.join(run.args.output_dir, name)
    accelerator.save_state(path)
    if accelerator.is_main_process:  # loop_state.json last: it marks the checkpoint complete
        record_rows(path, accelerator.unwrap_model(run.model))
        record_train_batch(path, train_batch(run.args, accelerator), run.train_data)
        write_json(os.path.join(path, LOOP_STATE), asdict(state) | {
            "train_seconds": state.train_seconds + time.time() - started,
            "data_seed": accelerator.dataloader_config.data_seed})
    accelerator.wait_for_everyone()


def check_continues(path, max_steps, args):
    """What refuses a checkpoint before the weights load: one that completed this run's `max_steps` would
    train nothing and report the old model as trained (unless it ends a run in output_dir killed before
    writing its model and results), and with --load_best_model_at_end the best epoch's model lies in the
    output folder of the checkpoint's own run."""
    state, output_dir = saved_loop_state(path), args.output_dir
    if state.completed_steps >= max_steps and not ended_unfinished_run(path, output_dir):
        raise UserError(f"--resume_from_checkpoint: {path} has completed {state.completed_steps} optimizer steps, and "
                        f"this run has {max_steps}, so resuming it would train nothing. To train on, raise "
                        "--num_train_epochs (or --max_train_steps); to evaluate or predict with the trained model, "
                        "give its output folder as --model_name_or_path with --num_train_epochs 0.")
    if args.load_best_model_at_end and state.best_epoch is not None and \
            not os.path.isfile(os.path.join(output_dir, "config.json")):
        raise UserError(f"--load_best_model_at_end: the model of the best epoch so far was saved in the output folder "
                        f"of the run that wrote {path}, not in {output_dir}. Resume into that folder.")


def saved_loop_state(path):
    with open(os.path.join(path, LOOP_STATE), encoding="utf-8") as handle:
        saved = json.load(handle)
    return LoopState(**{key: value for key, value in saved.items() if key in LoopState.__dataclass_fields__})


def restore(run, path, max_steps):
    """Load a checkpoint; returns (LoopState, batches of the current epoch already trained on)."""
    state = saved_loop_state(path)
    model = run.accelerator.unwrap_model(run.model)
    check_checkpoint_weights(path, model, model.config.name_or_path)
    if max_steps and state.completed_steps >= max_steps:
        logger.info("%s completed all %d optimizer steps of this run, which stopped before writing its model and "
                    "results: finishing it without training.", path, max_steps)
    else:
        logger.info("Resuming from %s", path)
    run.accelerator.load_state(path)
    done_in_epoch = state.completed_steps - state.epoch * steps_per_epoch(len(run.loaders["train"]), run.args)
    return state, max(done_in_epoch, 0) * run.args.gradient_accumulation_steps


def ended_unfinished_run(checkpoint, output_dir):
    """Whether `checkpoint` is in `output_dir` and that folder has no train_results.json: a run whose training
    ended there but that was killed before (or while) writing its model and results, which resuming finishes."""
    return in_folder(checkpoint, output_dir) and not os.path.isfile(os.path.join(output_dir, "train_results.json"))


def finish(run, tokenizer, state, kept_tags, origin):
    """The saved model (the last epoch's, or the best one's with --load_best_model_at_end, loaded back into
    the model), results, reports, predictions with that model, push. `origin` is (base model, command)."""
    accelerator, args = run.accelerator, run.args
    trained = trains(args)  # else (--num_train_epochs 0) the given model is scored as it is, not saved again
    if trained:
        if kept_epoch(state, args) != state.epoch:
            load_saved_weights(run)
        elif not (args.load_best_model_at_end and state.best_epoch is not None):  # else saved when it was scored
            save_model(run)
    if accelerator.is_main_process:
        if trained:
            tokenizer.save_pretrained(args.output_dir)
        train_results, eval_results = final_results(run, state)
        if train_results:
            save_results(args.output_dir, "train", train_results)
        if eval_results:
            save_results(args.output_dir, "eval", eval_results)
        log_saved_model(state, args, "validation" in run.loaders, run_steps_per_epoch(run))
    accelerator.wait_for_everyone()
    report(run, state, kept_tags, origin)
    if "test" in run.loaders:
        predict(run)
    # trackers finish, and the process group is taken down before the interpreter exits, as torch asks of
    # a run that created one (a rank of a two-process CPU run once died at the end with SIGABRT without it)
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        push(args)


def final_results(run, state):
    """(train results, eval results) with upstream's meaning: the last epoch's training loss and evaluation,
    `epoch` the epochs trained; with --load_best_model_at_end also the saved epoch's scores as best_*."""
    last = state.history[-1] if state.history else {}
    per_epoch = run_steps_per_epoch(run)
    epochs = epochs_at(state.completed_steps, per_epoch)
    train_results = {}
    if state.completed_steps:
        examples = len(run.splits["train"].tokens)
        train_results = timing_metrics("train", state.train_seconds, round(examples * epochs), state.completed_steps)
        train_results.update(train_loss=last.get("loss"), epoch=epochs, train_samples=examples,
                             total_flos=state.total_flos)
    eval_results = {key: value for key, value in last.items() if key.startswith("eval_")}
    if eval_results:
        eval_results["epoch"] = epochs
    if run.args.load_best_model_at_end and state.best_epoch is not None:
        best = best_entry(state)
        eval_results.update({f"best_{key}": value for key, value in best.items()
                             if key.startswith("eval_") and not key.endswith(TIMING_KEYS)},
                            best_epoch=epochs_at(best["step"], per_epoch))
    return train_results, eval_results


def log_saved_model(state, args, validated, per_epoch):
    """Say which epoch's model output_dir holds, and which keys describe it (epochs as `epochs_at` counts
    them, `per_epoch` optimizer steps each)."""
    if not trains(args):
        logger.info("--num_train_epochs 0: the model given was scored as it is, and is not saved again.")
        return
    last = f"{round(epochs_at(state.completed_steps, per_epoch), 2):g}"
    kept = kept_epoch(state, args)
    if not validated:
        logger.info("Saved the model of the last epoch, %s.", last)
    elif kept == state.epoch:
        reason = "the best by validation F1 too" if args.load_best_model_at_end else "use --load_best_model_at_end " \
                 "to keep the epoch with the best validation F1 instead"
        logger.info("Saved the model of the last epoch, %s (%s).", last, reason)
    else:
        best = best_so_far(state, per_epoch)  # the kept epoch, when it is not the last
        logger.info("Saved the model of epoch %g of %s, the best by validation F1 (%.4f): eval_* in eval_results.json "
                    "report the last epoch, best_* the saved model.", round(best.epoch, 2), last, best.value)


def loop_hyperparameters(args, accelerator, optimizer):
    """The training settings a model card lists, named as upstream's card names them."""
    total = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    fused = getattr(optimizer, "optimizer", optimizer).defaults.get("fused")  # unwrapped from accelerate's
    return {"learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
            "eval_batch_size": args.per_device_eval_batch_size, "seed": args.seed,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "total_train_batch_size": total,
            "optimizer": "adamw_torch_fused" if fused else "adamw_torch", "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm, "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value",
                                                                                  args.lr_scheduler_type)),
            "warmup_steps": args.num_warmup_steps,
            **({"training_steps": args.max_train_steps} if args.max_train_steps else
               {"num_epochs": args.num_train_epochs}),
            "mixed_precision": accelerator.mixed_precision,
            **launch_settings(accelerator.num_processes, accelerator.distributed_type, args.per_device_eval_batch_size)}


def report(run, state, kept_tags, origin):
    """Model card, confusion matrix (the saved model's validation labels, those of the kept epoch's
    evaluation) and learning curves; without training, the confusion matrix and error analysis only."""
    gold = run.splits["validation"].tags if "validation" in run.loaders else None
    if gold is not None and kept_tags is None:  # the kept epoch was scored before this process resumed
        kept_tags, _, _ = evaluate(run, "validation")
    if not run.accelerator.is_main_process:
        return
    trained = trains(run.args)
    if trained:
        base_model, command = origin
        facts = CardFacts(base_model, data_sources(run.data_args), run.label_list, command,
                          loop_hyperparameters(run.args, run.accelerator, run.optimizer), hub_dataset(run.data_args))
        scores = CardScores(gold, kept_tags, run.data_args.metric_mode, run.scheme) if gold is not None else None
        write_model_card(run.args.output_dir, facts, scores)
    if gold is not None:
        save_confusion_matrix(run.args.output_dir, gold, kept_tags)
        save_error_analysis(run.args.output_dir, run.splits["validation"], kept_tags, run.label_list,
                            run.data_args.metric_mode, run.scheme)
    if trained:
        save_learning_curves(run.args.output_dir, state.history)


def predict(run):
    """Predict the test split with the saved model; write predictions and predict_results.json."""
    started = time.time()
    split, loader = run.splits["test"], run.loaders["test"]
    tags, probabilities, scores = evaluate(run, "test")
    if run.accelerator.is_main_process:
        save_test_predictions(run.args.output_dir, split, tags, probabilities,
                              prediction_metrics(scores, time.time() - started, len(split.tokens), len(loader)),
                              run.label_list, run.data_args.metric_mode, run.scheme)


def push(args):
    """Upload the output folder (not its checkpoints) to the repository prepared before training
    (nerkit.hub.prepare_push)."""
    from huggingface_hub import HfApi

    target = PushTarget.of(args)
    api = HfApi(token=target.token)
    try:
        repo_id = api.create_repo(target.repo_id, exist_ok=True).repo_id
        api.upload_folder(folder_path=args.output_dir, repo_id=repo_id, commit_message="End of training",
                          ignore_patterns=["step_*", "epoch_*"])
    except (OSError, ValueError) as error:  # the hub's HTTP errors, a connection lost since the start
        raise push_failure(error, target, args.output_dir) from None


PRECISION_FLAGS = ("--fp16", "--bf16", "--mixed_precision")  # the Trainer's and AutoTrain's, not the loop's


def parse_command_line(argv):
    """(model_args, data_args, loop args, the command as the model card shows it)."""
    precision = [arg for arg in argv if arg.split("=")[0] in PRECISION_FLAGS]
    if precision:  # the Trainer's flags, which upstream's loop has never had either
        raise UserError(f"{precision[0].split('=')[0]}: run_ner_no_trainer.py takes its precision from `accelerate "
                        "launch --mixed_precision fp16|bf16|no run_ner_no_trainer.py ...` (or its configuration), "
                        "and without it chooses one itself (bf16 where the hardware has it, see "
                        "--no_auto_mixed_precision). Drop the flag.")
    # --max_seq_length is run_ner.py's spelling of --max_length: refused with that advice, not offered
    arguments = parse_arguments((NoTrainerModelArguments, DataTrainingArguments, LoopArguments), argv,
                                hidden=("max_seq_length",))
    return (*arguments, command_line([script_as_run("run_ner_no_trainer.py"), *argv]))


def cli(argv=None):
    main(*parse_command_line(sys.argv[1:] if argv is None else argv))


def _mp_fn(index):
    """The entry point of xla_spawn.py (TPU cores): it sets sys.argv and calls this in each process."""
    exit_on_user_error(main)


if __name__ == "__main__":
    try:
        exit_on_user_error(cli)
    finally:  # also after an error message: each process leaves its group
        end_of_script()
    end_of_group_run()  # reached after a run that succeeded
