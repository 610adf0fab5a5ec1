#!/usr/bin/env python
"""Fine-tune a transformer for token classification (NER, POS, chunking) with the Hugging Face Trainer.

The flags are those of the upstream `examples/pytorch/token-classification/run_ner.py`, for example:

    python run_ner.py --model_name_or_path google-bert/bert-base-uncased --dataset_name conll2003 \
        --output_dir /tmp/test-ner --do_train --do_eval

A single `.json` argument is read as the whole configuration. See README.md for every flag and file.
Other programs call `main()` as upstream's example tests do: with no arguments it reads `sys.argv`.
"""

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from functools import partial

from nerkit.startup import (collection_paused, end_of_group_run, end_of_script, keep_until_exit,
                            quiet_interrupt_while_importing)

if __name__ == "__main__":
    quiet_interrupt_while_importing()

with collection_paused():  # the libraries' objects live as long as the process (nerkit/startup.py)
    from torch.utils.data import DataLoader
    from transformers import (
        DataCollatorForTokenClassification,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    from transformers.training_args import ParallelMode
    from transformers.utils import logging as transformers_logging

    from nerkit.arguments import (
        DataTrainingArguments,
        ModelArguments,
        check_run_arguments,
        launcher_defaults,
        parse_arguments,
    )
    from nerkit.clipping import clip_in_step
    from nerkit.datacheck import check_data
    from nerkit.decoding import WordDecoder, reduce_logits
    from nerkit.embedding_rows import fold_rows, flops_per_input_token, record_rows, train_used_rows, why_whole_table
    from nerkit.errors import UserError, exit_on_user_error
    from nerkit.hub import PushTarget, check_hub_for_training, push_failure
    from nerkit.labels import check_checkpoint_labels, outside_label
    from nerkit.metrics import EntityScorer, entity_type
    from nerkit.modeling import check_checkpoint_model, declare_mean_loss, load_model, needs_unused_parameter_search
    from nerkit.outputs import check_model_survives_clearing, clear_earlier_run, prediction_metrics, save_results
    from nerkit.progress import interactive, score_table, use_short_lines
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
    from nerkit.resume import (TrainBatch, TrainingData, check_checkpoint_readable, check_same_train_batch,
                               check_same_training_data, in_folder, record_train_batch)
    from nerkit.schemes import model_scheme
    from nerkit.speed import (
        Precision,
        check_bf16_runs,
        choose_training_speedups,
        decide_precision,
        forget_other_precision,
        log_precision,
        longest_input,
        one_cast_per_weight,
        pad_multiple,
        prepare_device,
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
        trainer_log_levels,
    )

logger = logging.getLogger("run_ner")

SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}


class NerTrainer(Trainer):
    """The Trainer, with padding-free training batches when `train_collator` is given (evaluation keeps
    the padding collator), evaluation and prediction over every batch whatever --dataloader_drop_last says,
    stopping at once when the loss becomes NaN or infinite (the Trainer alone only hides such steps from
    its logs), and one short line per log instead of the dict of every metric."""

    def __init__(self, *args, train_collator=None, train_data=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.args.should_log:  # the Trainer set --log_level_replica, whose default means errors only here
            transformers_logging.set_verbosity(trainer_log_levels(self.args).others)
        self.train_collator = train_collator
        self.train_data = train_data  # recorded in checkpoints (nerkit.resume)
        self.flops_per_token = None  # read from the model once, at the first training step
        use_short_lines(self)

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        padding_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = padding_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._keeping_every_batch(super().get_eval_dataloader, eval_dataset)

    def floating_point_ops(self, inputs):
        """total_flos as the Trainer counts it, with the word-embedding rows trained apart counted as the
        embedding they are (nerkit.embedding_rows.flops_per_input_token)."""
        if self.flops_per_token is None:
            self.flops_per_token = flops_per_input_token(self.model)
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return inputs[main_input].numel() * self.flops_per_token if main_input in inputs else 0

    def get_test_dataloader(self, test_dataset):
        batching = inference_batching(test_dataset, self.args.eval_batch_size, self.args.world_size)
        if "batch_sampler" not in batching:
            return self._keeping_every_batch(super().get_test_dataloader, test_dataset)
        # an unlabelled split, longest first: batched as predict_ner.py's tagger batches, so short sentences
        # are not padded to a long document's windows (the Trainer's sampler takes no batch sampler)
        dataset = self._remove_unused_columns(test_dataset, description="test")
        return self.accelerator.prepare(DataLoader(dataset, collate_fn=self.data_collator, **batching,
                                                   num_workers=self.args.dataloader_num_workers,
                                                   pin_memory=self.args.dataloader_pin_memory))

    def _keeping_every_batch(self, make_loader, dataset):
        """--dataloader_drop_last is for training: evaluation and prediction read every window, or words
        would go unscored and unpredicted."""
        drop_last, self.args.dataloader_drop_last = self.args.dataloader_drop_last, False
        try:
            return make_loader(dataset)
        finally:
            self.args.dataloader_drop_last = drop_last

    def _remove_unused_columns(self, dataset, description=None):
        """The Trainer's, and always the columns only the word decoder reads, also with
        --remove_unused_columns False: the collator cannot pad them (upstream fails there on word_ids)."""
        dataset = super()._remove_unused_columns(dataset, description)
        extra = [name for name in DECODER_COLUMNS if name in dataset.column_names]
        return dataset.remove_columns(extra) if extra else dataset

    def evaluation_loop(self, *args, **kwargs):
        """The Trainer's, in one autocast region: each weight cast once, not once a batch (one_cast_per_weight)."""
        with one_cast_per_weight(self.accelerator):
            return super().evaluation_loop(*args, **kwargs)

    def _save_optimizer_and_scheduler(self, output_dir):
        """A checkpoint's optimizer state comes with the word-embedding rows it is for (nerkit.embedding_rows)
        and the batch and data size it was trained with (nerkit.resume), all written before trainer_state.json,
        which makes the checkpoint count as complete."""
        if self.args.should_save:
            record_rows(output_dir, self.model)
            devices = max(1, self.args.n_gpu)  # --auto_find_batch_size may have lowered the batch: the one in use
            record_train_batch(output_dir, train_batch(self.args, self._train_batch_size // devices),
                               self.train_data)
        super()._save_optimizer_and_scheduler(output_dir)

    def create_model_card(self, *args, **kwargs):
        """publish() has written nerkit's card (scores per entity type); a push keeps it."""

    def _clip_grad_norm(self, model):
        """Clipping inside fused AdamW's step where it can be (nerkit.clipping), else the Trainer's own."""
        norm = clip_in_step(model.parameters(), self.args.max_grad_norm, self.optimizer, self.accelerator)
        return norm if norm is not None else super()._clip_grad_norm(model)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_finite_loss(loss, self.state.global_step + 1, self.accelerator)
        return loss


def main(model_args=None, data_args=None, training_args=None, command=None):
    """Train, evaluate and predict as the parsed arguments say. Called with none (as upstream's example tests
    and xla_spawn call it), it parses `sys.argv` exactly as the command line does. A `UserError` reaches
    the caller; `cli` turns it into a message and exit status 2."""
    if model_args is None and data_args is None and training_args is None:
        model_args, data_args, training_args, command = parse_command_line(sys.argv[1:])
    with hub_token_in_environment(training_args):
        run(model_args, data_args, training_args, command)


def run(model_args, data_args, training_args, command):
    """The run itself, in the order a reader follows it: checks, data, model, precision, training,
    evaluation, prediction, reports."""
    setup_logging("run_ner", training_args.should_log, trainer_log_levels(training_args))
    logger.info("Running on %d process(es), device %s.", training_args.world_size, training_args.device)
    check_arguments(model_args, data_args, training_args)
    check_hub_for_training(model_args, data_args, PushTarget.of(training_args))
    if data_args.check_data:
        check_data(model_args, data_args, training_args.output_dir, data_args.max_seq_length, "--max_seq_length",
                   training_args.should_save)
        return
    prepare_device(training_args.device.type)
    checkpoint = checkpoint_to_resume(training_args, data_args)
    set_seed(training_args.seed)

    needed = {name: flag for name, flag in SPLIT_FLAGS.items() if getattr(training_args, flag[2:])}
    if training_args.eval_strategy != "no" and "validation" in needed:  # it turns --do_eval on by itself
        needed["validation"] = f"--eval_strategy {training_args.eval_strategy.value} (or --do_eval)"
    splits, declared = read_data(data_args, model_args, needed, only_needed=True)  # as upstream uses them
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared,
                                                                           training_args.do_train)
    check_metric_name(training_args, label_list, data_args)
    if training_args.do_train:
        check_checkpoint_model(checkpoint, config, model_args.model_name_or_path)
        check_checkpoint_labels(checkpoint, label_list)
    settings = encoding_settings(tokenizer, config, label_list, data_args, data_args.max_seq_length)
    features = encode_splits(splits, tokenizer, config, settings, data_args,
                             lambda: training_args.main_process_first(desc="tokenizing"))
    train_data = TrainingData.of(splits, features) if training_args.do_train else None
    if train_data:  # before the weights load
        check_same_training_data(checkpoint, train_data, "--max_seq_length")
    model = load_model(model_args, config, head_reused, training_args.do_train)

    training_args, precision = choose_precision(training_args, data_args, model, features)
    # torch.compile fuses on its own, and the group's checks of which tensor it was given would recompile
    packer = choose_training_speedups(model, tokenizer, features.get("train") if training_args.do_train else None,
                                      data_args, training_args.device, training_args.mixed_precision,
                                      fuse=not training_args.torch_compile)
    if training_args.do_train and data_args.train_used_embedding_rows:
        choose_embedding_rows(model, tokenizer.pad_token_id, features["train"], training_args, checkpoint)
    if training_args.do_train or training_args.world_size > 1:
        # else the Trainer scales the loss by accumulation steps and processes, the evaluation loss too
        declare_mean_loss(model)
    if training_args.do_train:
        training_args = choose_ddp_unused_parameters(model, training_args)
    trainer = build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings,
                            packer, train_data)
    log_precision(trainer.accelerator, precision, "Training" if training_args.do_train else "Inference")
    if training_args.do_train:
        train(trainer, checkpoint, len(splits["train"].tokens))
    if training_args.do_eval:
        evaluate(trainer, splits["validation"])
    if training_args.do_predict:
        predict(trainer, splits["test"], features["test"], label_list, data_args, training_args.output_dir)
    publish(trainer, model_args, data_args, training_args, label_list, splits, command or command_line())
    keep_until_exit(trainer)


def check_arguments(model_args, data_args, training_args):
    """Flag values and combinations that would otherwise fail after the model loads or minutes of training;
    the rules run_ner_no_trainer.py shares (nerkit.arguments.check_run_arguments) apply to --check_data too."""
    check_run_arguments(data_args, training_args)
    if data_args.check_data:
        return
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UserError("Nothing to do: add --do_train, --do_eval and/or --do_predict.")
    if data_args.early_stopping_patience is not None:
        if not training_args.load_best_model_at_end or training_args.eval_strategy == "no":
            raise UserError("--early_stopping_patience needs --load_best_model_at_end and an --eval_strategy "
                            "(epoch or steps) with the same --save_strategy, and a --metric_for_best_model (f1, say).")
    if training_args.do_train and training_args.num_train_epochs == 0 and training_args.max_steps <= 0:
        raise UserError("--do_train with --num_train_epochs 0 trains no step, and would save the model unchanged as "
                        "if trained. Give --num_train_epochs above 0 (or --max_steps), or leave --do_train out to "
                        "evaluate or predict with the model as it is (--do_eval, --do_predict).")
    if training_args.do_train:
        check_optimizer_installed(training_args)
        check_model_survives_clearing(model_args.model_name_or_path, training_args.output_dir,
                                      data_args.overwrite_output_dir, is_checkpoint_name)
    check_reporting_installed(training_args.report_to)


def check_reporting_installed(report_to):
    """The Trainer builds --report_to's callbacks after the model loads: a tracker whose package is not
    installed is refused first."""
    from transformers.integrations import get_available_reporting_integrations

    installed = get_available_reporting_integrations()
    missing = [name for name in report_to or () if name not in installed]
    if missing:
        raise UserError(f"--report_to {' '.join(missing)}: not installed here (pip install {' '.join(missing)}), or "
                        "report elsewhere: --report_to none, or a tracker that is installed "
                        f"({', '.join(installed) or 'none is'}).")


def check_optimizer_installed(training_args):
    """The Trainer imports --optim's package only when training starts, after --overwrite_output_dir has
    removed the earlier run's results: a missing package is refused first."""
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(training_args)
    except ImportError as error:
        optim = getattr(training_args.optim, "value", training_args.optim)
        raise UserError(f"--optim {optim} needs a package that is not installed: {str(error).rstrip('.')}. Or choose "
                        "another --optim (the default, adamw_torch_fused, needs nothing more).") from None
    except Exception:  # noqa: BLE001 -- anything else (GaLore's target modules) the Trainer reports as before
        pass


@contextlib.contextmanager
def hub_token_in_environment(training_args):
    """The Trainer pickles its arguments into training_args.bin; a --hub_token travels in the environment
    instead, where the hub client finds it, so it is never written anywhere. The environment is given back
    as it was, for a caller that runs main() in its own process."""
    token = training_args.hub_token
    if not token:
        yield
        return
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"], training_args.hub_token = token, None
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = before


def last_complete_checkpoint(output_dir):
    """The newest checkpoint-N whose trainer_state.json (the Trainer writes it last) is whole, or None: a
    run killed while saving leaves a half-written folder that must not be resumed from."""
    numbered = [(int(name.partition("-")[2]), os.path.join(output_dir, name))
                for name in os.listdir(output_dir) if is_checkpoint_name(name)]
    for _, path in sorted(numbered, reverse=True):
        if complete_checkpoint(path):
            return path
        logger.warning("Skipping the incomplete checkpoint %s.", path)
    return None


def is_checkpoint_name(name):
    prefix, _, number = name.partition("-")
    return prefix == PREFIX_CHECKPOINT_DIR and number.isdigit()


def complete_checkpoint(path):
    """Whether `path` is a checkpoint the Trainer finished writing: its trainer_state.json, written last,
    is whole."""
    return whole_trainer_state(path) is not None


def whole_trainer_state(folder):
    """The trainer_state.json of `folder` (a checkpoint, or an output folder whose training ended), or None
    where it is missing or not whole."""
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def checkpoint_to_resume(training_args, data_args):
    """The checkpoint training resumes from: --resume_from_checkpoint, else the last one in output_dir.

    A non-empty output_dir with no checkpoint, or one whose training finished, is never trained into unless
    --overwrite_output_dir says so, also from a checkpoint given that is not in it.
    """
    given, output_dir = training_args.resume_from_checkpoint, training_args.output_dir
    if given:
        check_given_checkpoint(given)
    if not training_args.do_train:
        return given
    if given:
        check_trains_on(given, training_args)
    last = None
    if not (given and in_folder(given, output_dir)):  # a checkpoint of the run in output_dir continues that run
        last = resumable_in(output_dir, data_args.overwrite_output_dir, training_args.load_best_model_at_end, given)
    checkpoint = given or last
    if checkpoint is not None:
        check_resumable(checkpoint, training_args)
        logger.info("Resuming training from %s%s.", checkpoint, "" if given else
                    " (add --overwrite_output_dir to start afresh)")
    return checkpoint


def check_given_checkpoint(path):
    if not os.path.isdir(path):
        raise UserError(f"--resume_from_checkpoint {path} is not a folder.")
    if not complete_checkpoint(path):
        raise UserError(f"--resume_from_checkpoint {path} is not a complete checkpoint written by the Trainer "
                        "(a checkpoint-N folder with its trainer_state.json). Give one of the checkpoint-N "
                        "folders in an output folder, or leave the flag out: the newest one in --output_dir is "
                        "resumed from by itself.")


def resumable_in(output_dir, overwrite, keeps_best, given=None):
    """The last complete checkpoint of the run in output_dir, or None; a folder whose run finished, or that
    is not empty and holds no checkpoint, is refused unless --overwrite_output_dir. `given`: the checkpoint
    from elsewhere this run resumes from instead, for the message."""
    if overwrite or not os.path.isdir(output_dir):
        return None
    last = last_complete_checkpoint(output_dir)
    check_not_finished(output_dir, last, keeps_best, given)
    if last is None and os.listdir(output_dir):
        over = f"; resuming {given} would write this run over what it holds" if given else ""
        raise UserError(f"The output folder {output_dir} already exists, is not empty and holds no checkpoint to "
                        f"resume from{over}. Choose another --output_dir, or add --overwrite_output_dir to train into it.")
    return last


def check_not_finished(output_dir, checkpoint, keeps_best, given=None):
    """Refuse to train into a folder whose run ended: train_results.json is written once training is over,
    and a last checkpoint saved when training stopped (last step, early stopping) says so too when the run
    died before writing it, in which case the top-level model may be missing or half-written: the message
    names the checkpoint that holds the trained model (the best one with --load_best_model_at_end)."""
    again = "Choose another --output_dir, or add --overwrite_output_dir to train again from the start"
    if os.path.isfile(os.path.join(output_dir, "train_results.json")):
        then = f"resuming {given} would overwrite its model and results" if given else \
            "running the command again would train nothing and overwrite its results"
        raise UserError(f"The output folder {output_dir} holds a finished training run (train_results.json is "
                        f"there); {then}. {again}, "
                        "or leave out --do_train to evaluate or predict with the trained model (--model_name_or_path "
                        f"{output_dir}).")
    checkpoint_state = trainer_state(checkpoint) if checkpoint is not None else {}
    # the state written when training ended (before the final model), else the last checkpoint's
    state = whole_trainer_state(output_dir) or checkpoint_state
    if not training_ended(state):
        return
    best = state.get("best_model_checkpoint")
    last = checkpoint if checkpoint_state.get("global_step") == state.get("global_step") else None
    model = best if keeps_best and best and complete_checkpoint(best) else last
    where = (f"The trained model is in {model}: to evaluate or predict with it, give --model_name_or_path {model} "
             "with another --output_dir and without --do_train." if model else "No checkpoint holds the trained model.")
    raise UserError(f"The output folder {output_dir} holds a training run that ended at step "
                    f"{state.get('global_step')} but stopped before writing its final model and results (there is no "
                    f"train_results.json), so its top-level model may be missing or half-written. {where} {again}.")


def check_trains_on(checkpoint, training_args):
    """An explicit --resume_from_checkpoint whose run ended (its last step, an early stop, or a whole output
    folder) would train no step unless this run is longer, and would write a train_loss of 0.0."""
    state = trainer_state(checkpoint)
    longer = training_args.max_steps > state.get("global_step", 0) if training_args.max_steps > 0 else \
        training_args.num_train_epochs > state.get("num_train_epochs", 0)
    if training_ended(state) and not longer:
        raise UserError(f"--resume_from_checkpoint {checkpoint}: {os.path.basename(os.path.normpath(checkpoint))} is "
                        f"the last step of a finished run ({state.get('global_step')} steps), so resuming it would "
                        "train nothing. To train on, raise --num_train_epochs (or --max_steps) above that run's; to "
                        "evaluate or predict with its model, leave out --do_train and give the folder as "
                        "--model_name_or_path.")


def check_resumable(checkpoint, training_args):
    """A checkpoint this run can continue: its optimizer state is there, its batch is this run's, and its
    files are whole."""
    check_checkpoint_readable(checkpoint)
    check_has_optimizer(checkpoint)
    check_same_train_batch(checkpoint, train_batch(training_args), training_args.auto_find_batch_size)


def train_batch(training_args, per_device=None):
    """The examples of one optimizer step (nerkit.resume.TrainBatch), `per_device` a device if given."""
    return TrainBatch(per_device or training_args.per_device_train_batch_size,
                      training_args.gradient_accumulation_steps, training_args.world_size,
                      max(1, training_args.n_gpu))


def check_has_optimizer(checkpoint):
    """A checkpoint saved with --save_only_model has no optimizer, scheduler or random state: the Trainer
    would resume it with a fresh optimizer and a schedule at its start, a run unlike the one interrupted.
    (Sharded runs name their optimizer state optimizer_0, DeepSpeed global_stepN.)"""
    if any(name.startswith(("optimizer", "global_step")) for name in os.listdir(checkpoint)):
        return
    raise UserError(f"The checkpoint {checkpoint} holds no optimizer state (it was saved with --save_only_model), "
                    "so resuming it would not continue the interrupted run. Fine-tune from it instead: "
                    f"--model_name_or_path {checkpoint} with another --output_dir; or add --overwrite_output_dir to "
                    "train again from the start.")


def trainer_state(checkpoint):
    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as handle:
        return json.load(handle)


def training_ended(state):
    """Whether a Trainer state was saved when training stopped: at its last step, or by early stopping."""
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    return state.get("global_step", 0) >= state.get("max_steps", 0) > 0 or bool(control.get("should_training_stop"))


def choose_ddp_unused_parameters(model, training_args):
    """DDP's find_unused_parameters, which the Trainer turns on for every transformers model: a pass over the
    autograd graph after each forward, and a warning from every process when no parameter was unused. Off,
    where the user did not choose, when a forward and backward of the model as it trains (after the swaps
    above) gives every trainable parameter a gradient. Read when the Trainer builds its Accelerator."""
    if training_args.ddp_find_unused_parameters is not None or training_args.world_size < 2 or \
            training_args.parallel_mode != ParallelMode.DISTRIBUTED or recomputes_activations(model, training_args):
        return training_args
    if needs_unused_parameter_search(model) is not False:
        return training_args
    logger.info("Every trainable parameter gets a gradient, so DDP does not look for unused ones at every step "
                "(--ddp_find_unused_parameters True does).")
    return dataclasses.replace(training_args, ddp_find_unused_parameters=False)


def recomputes_activations(model, training_args):
    """Whether the backward pass recomputes activations (the Trainer then needs DDP's search, and so does not
    build DDP without it): the flag, or the model set so. Transformers 5.23 renamed gradient checkpointing to
    activation checkpointing and warns on the old name; earlier 5.x know only the old one."""
    if getattr(training_args, "activation_checkpointing", False) or training_args.gradient_checkpointing:
        return True
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def check_metric_name(training_args, label_list, data_args):
    """--metric_for_best_model must name a key evaluation reports, checked before any training."""
    name = training_args.metric_for_best_model
    if not name:
        return
    name = name.removeprefix("eval_")
    known = {"loss", "precision", "recall", "f1", "accuracy"}
    if data_args.return_entity_level_metrics:
        known |= {f"overall_{key}" for key in ("precision", "recall", "f1", "accuracy")}
        types = {entity_type(label) for label in label_list} - {None}
        known |= {f"{kind}_{key}" for kind in types for key in ("precision", "recall", "f1", "number")}
    if name not in known:
        raise UserError(f"--metric_for_best_model {training_args.metric_for_best_model} is not a score evaluation "
                        f"reports; use one of: {', '.join(sorted(known))}.")


def choose_precision(training_args, data_args, model, features):
    """(training_args, Precision): the run's precision (nerkit.speed.decide_precision; an automatic bf16
    that the model fails in on the run's longest input falls back to fp32) in force in the arguments the
    Trainer builds its Accelerator from. transformers fixes `mixed_precision` when TrainingArguments is
    created, so an automatic bf16 builds them again (dataclasses.replace runs their __post_init__), with
    use_cpu on a CPU, where TrainingArguments accepts bf16 only with it."""
    requested = "fp16" if training_args.fp16 else "bf16" if training_args.bf16 else None
    precision = decide_precision(requested, data_args.auto_mixed_precision, training_args.use_cpu)
    if precision.automatic and precision.mixed_precision == "bf16" and training_args.fp16_full_eval:
        # the model cast to fp16 for evaluation would meet bf16 autocast, which the CPU's layer norm refuses;
        # fp32 training is what upstream does with this flag on any device
        precision = Precision("no", "the automatic bf16 gives way to --fp16_full_eval", automatic=True)
    precision = check_bf16_runs(precision, model, longest_input(features), training_args.device.type)
    if precision.automatic and precision.mixed_precision == "bf16":
        on_cpu = training_args.use_cpu or training_args.device.type == "cpu"
        training_args = dataclasses.replace(training_args, bf16=True, use_cpu=on_cpu)
    if training_args.fp16 and precision.mixed_precision == "no":  # fp16 on the CPU (nerkit.speed.as_run_on)
        training_args = dataclasses.replace(training_args, fp16=False)
    if training_args.mixed_precision == "fp16" and precision.mixed_precision == "no":
        # accelerate launch's fp16 on the CPU: TrainingArguments took it from the environment, and the Trainer
        # builds its Accelerator from this attribute
        training_args.mixed_precision = "no"
    forget_other_precision(training_args.mixed_precision)
    return training_args, precision


def choose_embedding_rows(model, pad_token_id, train_features, training_args, checkpoint):
    """Train only the word-embedding rows the training data uses, where that is the same training
    (nerkit.embedding_rows)."""
    sharded = bool(training_args.fsdp or training_args.deepspeed)
    why_not = why_whole_table(model, training_args.optim, training_args.weight_decay, sharded)
    train_used_rows(model, train_features, pad_token_id, why_not, checkpoint)


def build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings, packer,
                  train_data=None):
    evaluating = "validation" in splits and (training_args.do_eval or training_args.eval_strategy != "no")
    scorer = None
    if evaluating:
        split = splits["validation"]
        decoder = WordDecoder(features["validation"], [len(words) for words in split.tokens], data_args.decoding)
        scorer = EntityScorer(decoder, split, label_list, outside_label(label_list), data_args.metric_mode,
                              data_args.return_entity_level_metrics, model_scheme(model.config))
    collator = DataCollatorForTokenClassification(
        tokenizer,
        padding="max_length" if data_args.pad_to_max_length else True,
        max_length=settings.max_length if data_args.pad_to_max_length else None,
        pad_to_multiple_of=None if data_args.pad_to_max_length else pad_multiple(training_args.mixed_precision),
    )
    # Evaluation streams: each batch is decoded into words as it comes, so no predictions of the whole set
    # are held (EntityScorer takes batches and gives the scores on the last). With several processes the
    # Trainer (5.23) hands batch_eval_metrics each rank's own shard only, so there the reduced predictions
    # of the whole set are gathered once instead ((id, probability) per sub-token, not logits).
    training_args.batch_eval_metrics = training_args.world_size == 1
    callbacks = []
    if data_args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(data_args.early_stopping_patience, data_args.early_stopping_threshold))
    return NerTrainer(
        model=model,
        args=training_args,
        train_dataset=features.get("train") if training_args.do_train else None,
        eval_dataset=features["validation"] if evaluating else None,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=scorer,
        preprocess_logits_for_metrics=partial(reduce_logits, keep_distribution=data_args.decoding == "viterbi"),
        callbacks=callbacks,
        train_collator=packer,
        train_data=train_data,
    )


def train(trainer, checkpoint, num_examples):
    if checkpoint is None and trainer.is_world_process_zero():
        clear_earlier_run(trainer.args.output_dir, is_checkpoint_name)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # trainer_state.json first: it says training ended should the process die while the model is written,
    # after the Trainer has removed the last checkpoint (--save_total_limit 1 keeps the best one alone)
    trainer.save_state()
    fold_rows(trainer.model)
    # the tokenizer and the config with the real label names come along; not pushed yet (the Trainer's own
    # call would): --push_to_hub uploads once, at the end, with the model card (publish)
    trainer.save_model(_internal_call=True)
    metrics = dict(result.metrics, train_samples=num_examples)
    trainer.log_metrics("train", metrics)
    if trainer.is_world_process_zero():
        save_results(trainer.args.output_dir, "train", metrics)
        save_learning_curves(trainer.args.output_dir, [
            dict(entry, step=entry.get("step", 0)) for entry in trainer.state.log_history
            if "loss" in entry or "eval_f1" in entry])


def evaluate(trainer, split):
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(split.tokens)
    trainer.log_metrics("eval", metrics)  # upstream's "***** eval metrics *****" block, then the table
    logger.info("Validation scores:\n%s", score_table(metrics, "eval"))
    if trainer.is_world_process_zero():
        save_results(trainer.args.output_dir, "eval", metrics)
        scorer = trainer.compute_metrics
        if scorer.last_tags is None:  # the Trainer computed no predictions
            logger.info("With --prediction_loss_only evaluation computes the loss alone: no scores, confusion "
                        "matrix or error analysis.")
            return
        save_confusion_matrix(trainer.args.output_dir, split.tags, scorer.last_tags)
        save_error_analysis(trainer.args.output_dir, split, scorer.last_tags, scorer.label_list, scorer.mode,
                            scorer.scheme)


def predict(trainer, split, features, label_list, data_args, output_dir):
    """Predict every word of the test split, batch by batch; score and analyse its errors when it is
    labelled; write predictions.txt and predictions.jsonl."""
    model, loader = trainer.model.eval(), trainer.get_test_dataloader(features)
    started = time.time()
    batches = (trainer.prediction_step(model, inputs, prediction_loss_only=False)[:2] for inputs in loader)
    tags, probabilities, scores = decode_and_score(batches, trainer.accelerator, split, features, label_list,
                                                   data_args, model_scheme(model.config))
    metrics = prediction_metrics(scores, time.time() - started, len(split.tokens), len(loader))
    trainer.log_metrics("predict", metrics)
    if trainer.is_world_process_zero():
        save_test_predictions(output_dir, split, tags, probabilities, metrics, label_list, data_args.metric_mode,
                              model_scheme(model.config))


def publish(trainer, model_args, data_args, training_args, label_list, splits, command):
    """The model card of a trained folder (README.md), then a push to the hub with --push_to_hub."""
    if not training_args.do_train:
        return
    if trainer.is_world_process_zero():
        scorer = trainer.compute_metrics
        evaluated = scorer is not None and scorer.last_tags is not None
        facts = CardFacts(model_args.model_name_or_path, data_sources(data_args), label_list, command,
                          trainer_hyperparameters(trainer.args, trainer.accelerator), hub_dataset(data_args))
        scores = CardScores(splits["validation"].tags, scorer.last_tags, data_args.metric_mode,
                            model_scheme(trainer.model.config)) if evaluated else None
        write_model_card(training_args.output_dir, facts, scores)
    if training_args.push_to_hub:
        # On every process: push_to_hub saves the model first, which under FSDP or ZeRO-3 gathers the
        # parameters from all of them; the Trainer uploads from process zero alone.
        try:
            trainer.push_to_hub(commit_message="End of training")
        except (OSError, ValueError) as error:  # the hub's HTTP errors, a connection lost since the start
            raise push_failure(error, PushTarget.of(training_args), training_args.output_dir) from None


def trainer_hyperparameters(args, accelerator):
    """The training settings a model card lists, named as upstream's card names them; the optimizer with its
    settings, and label smoothing and the scheduler's arguments where given, as upstream's card adds them."""
    total = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    return {"learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
            "eval_batch_size": args.per_device_eval_batch_size, "seed": args.seed,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "total_train_batch_size": total,
            "optimizer": optimizer_settings(args),
            "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            **({"lr_scheduler_kwargs": args.lr_scheduler_kwargs} if args.lr_scheduler_kwargs else {}),
            "warmup_steps": args.warmup_steps,
            **({"label_smoothing_factor": args.label_smoothing_factor} if args.label_smoothing_factor else {}),
            **({"training_steps": args.max_steps} if args.max_steps > 0 else {"num_epochs": args.num_train_epochs}),
            "mixed_precision": accelerator.mixed_precision,
            **launch_settings(args.world_size, accelerator.distributed_type, args.per_device_eval_batch_size)}


def optimizer_settings(args):
    """'adamw_torch_fused with betas=(0.9,0.999) and epsilon=1e-08': the --optim name, Adam's settings for
    an Adam variant, and --optim_args when given."""
    name = str(getattr(args.optim, "value", args.optim))
    settings = [f"betas=({args.adam_beta1},{args.adam_beta2})", f"epsilon={args.adam_epsilon}"] \
        if "adam" in name.lower() else []
    if args.optim_args:
        settings.append(f"optim_args={args.optim_args}")
    return f"{name} with {' and '.join(settings)}" if settings else name


def parse_command_line(argv):
    """(model_args, data_args, training_args, the command as the model card shows it). Off a terminal the
    Trainer's progress bars are off unless --disable_tqdm says otherwise, so logs hold no bars."""
    defaults = launcher_defaults() | ({} if interactive() else {"disable_tqdm": True})
    arguments = parse_arguments((ModelArguments, DataTrainingArguments, TrainingArguments), argv, defaults,
                                explain=explain_training_arguments)
    return (*arguments, command_line([script_as_run("run_ner.py"), *argv]))


def explain_training_arguments(values, error):
    """What to do about the refusals of TrainingArguments that its own text leaves open, else None. `values`
    are the flags as parsed (a JSON configuration's too)."""
    said = str(error)
    if values.get("bf16") and values.get("fp16") and "16" in said:
        return ("--bf16 and --fp16 each ask for a precision: give one of them, or neither (the run then chooses "
                "its precision itself: README, Performance, Mixed precision where it pays).")
    if "bf16" in said and (values.get("bf16") or values.get("bf16_full_eval")) and not values.get("use_cpu"):
        return ("--bf16 asks for bf16 on a GPU, and PyTorch sees none with bf16 here. To train in bf16 on the CPU "
                "add --use_cpu; or leave --bf16 out: the run chooses bf16 by itself on a CPU with bf16 matrix "
                "instructions (README, Performance, Mixed precision where it pays).")
    if "load_best_model_at_end" in said and "strategy" in said:
        evaluated, saved = str(values.get("eval_strategy")), str(values.get("save_strategy"))
        return (f"--load_best_model_at_end keeps the best evaluated checkpoint, so the run must evaluate when it "
                f"saves: --eval_strategy is {evaluated} and --save_strategy {saved}. Give both the same value (epoch, "
                "or steps with --save_steps a multiple of --eval_steps), or leave --load_best_model_at_end out.")
    return None


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
