#!/usr/bin/env python
"""Fine-tune a transformer for token classification (NER, POS, chunking) with the Hugging Face Trainer.

The flags are those of the upstream `examples/pytorch/token-classification/run_ner.py`, for example:

    python run_ner.py --model_name_or_path google-bert/bert-base-uncased --dataset_name conll2003 \
        --output_dir /tmp/test-ner --do_train --do_eval

A single `.json` argument is read as the whole configuration. See README.md for every flag and file.
"""

import json
import logging
import os
import sys
import time
from functools import partial

from transformers import (
    DataCollatorForTokenClassification,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from nerkit.arguments import DataTrainingArguments, ModelArguments, launcher_defaults, parse_arguments
from nerkit.decoding import WordDecoder, reduce_logits
from nerkit.errors import UserError, exit_on_user_error
from nerkit.labels import outside_label
from nerkit.metrics import EntityScorer
from nerkit.modeling import load_model
from nerkit.outputs import save_results, timing_metrics, write_predictions
from nerkit.report import command_line, data_sources, save_confusion_matrix, save_learning_curves, write_model_card
from nerkit.speed import automatic_precision, choose_packing
from nerkit.workflow import (
    check_finite_loss,
    decode_and_score,
    encode_splits,
    load_tokenizer_and_labels,
    read_data,
    setup_logging,
)

logger = logging.getLogger("run_ner")

SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}


class NerTrainer(Trainer):
    """The Trainer, with padding-free training batches when `train_collator` is given (evaluation keeps
    the padding collator), stopping at once when the loss becomes NaN or infinite (the Trainer alone only
    hides such steps from its logs)."""

    def __init__(self, *args, train_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        padding_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = padding_collator

    def create_model_card(self, *args, **kwargs):
        """publish() has written nerkit's card (scores per entity type); a push keeps it."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_finite_loss(loss, self.state.global_step + 1)
        return loss


def main(model_args, data_args, training_args, command=None):
    setup_logging("run_ner", training_args.should_log)
    logger.info("Running on %d process(es), device %s.", training_args.world_size, training_args.device)
    check_arguments(data_args, training_args)
    keep_token_out_of_files(training_args)
    checkpoint = checkpoint_to_resume(training_args, data_args)
    set_seed(training_args.seed)

    needed = {name: flag for name, flag in SPLIT_FLAGS.items() if getattr(training_args, flag[2:])}
    splits, declared = read_data(data_args, model_args, needed)
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared)
    check_metric_name(training_args, label_list, data_args)
    model = load_model(model_args, config, head_reused)
    settings, features = encode_splits(splits, tokenizer, config, label_list, data_args, data_args.max_seq_length,
                                       lambda: training_args.main_process_first(desc="tokenizing"))

    choose_precision(training_args, data_args)
    packer = choose_packing(model, tokenizer, features.get("train") if training_args.do_train else None,
                            data_args.packing, data_args.pad_to_max_length, training_args.device,
                            "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None)
    trainer = build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings,
                            packer)
    if training_args.do_train:
        train(trainer, checkpoint, len(splits["train"].tokens))
    if training_args.do_eval:
        evaluate(trainer, splits["validation"])
    if training_args.do_predict:
        predict(trainer, splits["test"], features["test"], label_list, data_args, training_args.output_dir)
    publish(trainer, model_args, data_args, training_args, label_list, splits, command or command_line())


def check_arguments(data_args, training_args):
    """Flag combinations that would otherwise fail after minutes of training."""
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UserError("Nothing to do: add --do_train, --do_eval and/or --do_predict.")
    if data_args.early_stopping_patience is not None:
        if not training_args.load_best_model_at_end or training_args.eval_strategy == "no":
            raise UserError("--early_stopping_patience needs --load_best_model_at_end and an --eval_strategy "
                            "(epoch or steps) with the same --save_strategy, and --metric_for_best_model f1.")
    if training_args.output_dir is None:
        raise UserError("Give --output_dir: the folder for the model, the scores and the predictions.")


def keep_token_out_of_files(training_args):
    """The Trainer pickles its arguments into training_args.bin; a --hub_token travels in the environment
    instead, where the hub client finds it, so it is never written anywhere."""
    if training_args.hub_token:
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None


def last_complete_checkpoint(output_dir):
    """The newest checkpoint-N whose trainer_state.json (the Trainer writes it last) is whole, or None: a
    run killed while saving leaves a half-written folder that must not be resumed from."""
    numbered = []
    for name in os.listdir(output_dir):
        prefix, _, number = name.partition("-")
        if prefix == PREFIX_CHECKPOINT_DIR and number.isdigit():
            numbered.append((int(number), os.path.join(output_dir, name)))
    for _, path in sorted(numbered, reverse=True):
        try:
            with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as handle:
                json.load(handle)
            return path
        except (OSError, ValueError):
            logger.warning("Skipping the incomplete checkpoint %s.", path)
    return None


def checkpoint_to_resume(training_args, data_args):
    """The checkpoint training resumes from: --resume_from_checkpoint, else the last one in output_dir.

    A non-empty output_dir with no checkpoint is never trained into unless --overwrite_output_dir says so.
    """
    if training_args.resume_from_checkpoint:
        if not os.path.isdir(training_args.resume_from_checkpoint):
            raise UserError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint} is not a folder.")
        return training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    if not training_args.do_train or not os.path.isdir(output_dir) or data_args.overwrite_output_dir:
        return None
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        logger.info("Resuming training from %s (add --overwrite_output_dir to start afresh).", last)
        return last
    if os.listdir(output_dir):
        raise UserError(f"The output folder {output_dir} already exists, is not empty and holds no checkpoint to "
                        "resume from. Choose another --output_dir, or add --overwrite_output_dir to train into it.")
    return None


def check_metric_name(training_args, label_list, data_args):
    """--metric_for_best_model must name a key evaluation reports, checked before any training."""
    name = training_args.metric_for_best_model
    if not name:
        return
    name = name.removeprefix("eval_")
    known = {"loss", "precision", "recall", "f1", "accuracy"}
    if data_args.return_entity_level_metrics:
        known |= {f"overall_{key}" for key in ("precision", "recall", "f1", "accuracy")}
        types = {label.split("-", 1)[-1] for label in label_list if label != "O"}
        known |= {f"{kind}_{key}" for kind in types for key in ("precision", "recall", "f1", "number")}
    if name not in known:
        raise UserError(f"--metric_for_best_model {training_args.metric_for_best_model} is not a score evaluation "
                        f"reports; use one of: {', '.join(sorted(known))}.")


def choose_precision(training_args, data_args):
    """bf16 where the hardware does it well, unless the command chose a precision (see nerkit.speed)."""
    if data_args.auto_mixed_precision and not (training_args.fp16 or training_args.bf16):
        if automatic_precision(training_args.use_cpu) == "bf16":
            training_args.bf16 = True
            logger.info("Training in bf16, which this hardware runs faster (--no_auto_mixed_precision: fp32).")


def build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings, packer):
    evaluating = "validation" in splits and (training_args.do_eval or training_args.eval_strategy != "no")
    scorer = None
    if evaluating:
        split = splits["validation"]
        decoder = WordDecoder(features["validation"], [len(words) for words in split.tokens], data_args.decoding)
        scorer = EntityScorer(decoder, split, label_list, outside_label(label_list), data_args.metric_mode,
                              data_args.return_entity_level_metrics)
    mixed = training_args.fp16 or training_args.bf16
    collator = DataCollatorForTokenClassification(
        tokenizer,
        padding="max_length" if data_args.pad_to_max_length else True,
        max_length=settings.max_length if data_args.pad_to_max_length else None,
        pad_to_multiple_of=8 if mixed and not data_args.pad_to_max_length else None,
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
    )


def train(trainer, checkpoint, num_examples):
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # the tokenizer and the config with the real label names come along
    metrics = dict(result.metrics, train_samples=num_examples)
    trainer.log_metrics("train", metrics)
    if trainer.is_world_process_zero():
        save_results(trainer.args.output_dir, "train", metrics)
        save_learning_curves(trainer.args.output_dir, [
            dict(entry, step=entry.get("step", 0)) for entry in trainer.state.log_history
            if "loss" in entry or "eval_f1" in entry])
    trainer.save_state()


def evaluate(trainer, split):
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(split.tokens)
    trainer.log_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        save_results(trainer.args.output_dir, "eval", metrics)
        save_confusion_matrix(trainer.args.output_dir, split.tags, trainer.compute_metrics.last_tags)


def predict(trainer, split, features, label_list, data_args, output_dir):
    """Predict every word of the test split, batch by batch; score it when it is labelled; write
    predictions.txt and predictions.jsonl."""
    model, loader = trainer.model.eval(), trainer.get_test_dataloader(features)
    started = time.time()
    batches = (trainer.prediction_step(model, inputs, prediction_loss_only=False)[:2] for inputs in loader)
    tags, probabilities, scores = decode_and_score(batches, trainer.accelerator, split, features, label_list,
                                                   data_args)
    metrics = {f"predict_{key}": value for key, value in scores.items()}
    metrics.update(timing_metrics("predict", time.time() - started, len(split.tokens), len(loader)))
    trainer.log_metrics("predict", metrics)
    if trainer.is_world_process_zero():
        save_results(output_dir, "predict", metrics)
        write_predictions(output_dir, split, tags, probabilities)


def publish(trainer, model_args, data_args, training_args, label_list, splits, command):
    """The model card of a trained folder (README.md), then a push to the hub with --push_to_hub."""
    if not training_args.do_train or not trainer.is_world_process_zero():
        return
    scorer = trainer.compute_metrics
    evaluated = scorer is not None and scorer.last_tags is not None
    write_model_card(training_args.output_dir, model_args.model_name_or_path, data_sources(data_args), label_list,
                     command, splits["validation"].tags if evaluated else None,
                     scorer.last_tags if evaluated else None, data_args.metric_mode)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments((ModelArguments, DataTrainingArguments, TrainingArguments), argv, launcher_defaults())
    main(*arguments, command=command_line(["run_ner.py", *argv]))


if __name__ == "__main__":
    exit_on_user_error(cli)
