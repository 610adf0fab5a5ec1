#!/usr/bin/env python
"""Fine-tune a transformer for token classification (NER, POS, chunking) with the Hugging Face Trainer.

The flags are those of the upstream `examples/pytorch/token-classification/run_ner.py`, for example:

    python run_ner.py --model_name_or_path google-bert/bert-base-uncased --dataset_name conll2003 \
        --output_dir /tmp/test-ner --do_train --do_eval

A single `.json` argument is read as the whole configuration. See README.md for every flag and file.
"""

import logging
import os
import sys
import time
import warnings

import datasets
import transformers
from transformers import (
    DataCollatorForTokenClassification,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from nerkit.arguments import DataTrainingArguments, ModelArguments, parse_arguments
from nerkit.data import load_splits
from nerkit.decoding import WordDecoder, collect_words, reduce_logits
from nerkit.errors import UserError, exit_on_user_error
from nerkit.labels import choose_label_list, data_label_list, inside_label_ids, model_label_list, outside_label
from nerkit.metrics import EntityScorer, entity_scores
from nerkit.modeling import load_config, load_model, set_labels
from nerkit.outputs import predictions_jsonl, predictions_text, write_atomic
from nerkit.summary import log_summary
from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer, window_length

logger = logging.getLogger("run_ner")

SPLIT_FLAGS = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}
SPLIT_FILES = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}


def main(model_args, data_args, training_args):
    setup_logging(training_args)
    check_arguments(data_args, training_args)
    checkpoint = checkpoint_to_resume(training_args, data_args)
    set_seed(training_args.seed)

    splits, declared_labels = read_data(data_args, model_args, training_args)
    tokenizer = load_fast_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                    model_args.hub_kwargs())
    log_summary(splits, tokenizer)
    config = load_config(model_args, data_args.task_name)
    label_list, head_reused = settle_labels(splits, declared_labels, config, model_args)
    check_metric_name(training_args, label_list, data_args)
    set_labels(config, label_list)
    model = load_model(model_args, config, head_reused)

    settings = EncodingSettings(
        max_length=window_length(tokenizer, config, data_args.max_seq_length),
        stride=data_args.stride,
        inside_ids=inside_label_ids(label_list) if data_args.label_all_tokens else None,
    )
    label2id = config.label2id
    with training_args.main_process_first(desc="tokenizing"):
        features = {name: encode_split(split, tokenizer, label2id, settings, data_args.preprocessing_num_workers)
                    for name, split in splits.items()}

    trainer = build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings)
    if training_args.do_train:
        train(trainer, checkpoint, len(splits["train"].tokens))
    if training_args.do_eval:
        evaluate(trainer, len(splits["validation"].tokens))
    if training_args.do_predict:
        predict(trainer, splits["test"], features["test"], label_list, data_args, training_args.output_dir)
    publish(trainer, model_args, data_args, training_args)


def setup_logging(training_args):
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.INFO if training_args.should_log else logging.WARNING
    for name in ("run_ner", "nerkit"):
        logging.getLogger(name).setLevel(level)
    # On CPU-only machines the Trainer's default pin_memory=True only earns a warning per dataloader.
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator is found.*")
    datasets.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_warning()


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
    last = get_last_checkpoint(output_dir)
    if last is not None:
        logger.info("Resuming training from %s (add --overwrite_output_dir to start afresh).", last)
        return last
    if os.listdir(output_dir):
        raise UserError(f"The output folder {output_dir} already exists, is not empty and holds no checkpoint to "
                        "resume from. Choose another --output_dir, or add --overwrite_output_dir to train into it.")
    return None


def read_data(data_args, model_args, training_args):
    """Every split given, checked, and the label names the data declares (or None); the splits the --do_*
    flags need must be there."""
    splits, declared = load_splits(data_args, model_args.cache_dir, model_args.token)
    wanted = {"train": training_args.do_train, "validation": training_args.do_eval, "test": training_args.do_predict}
    for name, needed in wanted.items():
        if needed and name not in splits:
            raise UserError(f"{SPLIT_FLAGS[name]} needs a {name} split: give {SPLIT_FILES[name]}, or a dataset "
                            f"with a '{name}' split.")
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    return {name: split.select(limits[name]) for name, split in splits.items()}, declared


def settle_labels(splits, declared, config, model_args):
    """The label list (see nerkit.labels) and whether the pretrained head is reused as it is."""
    labelled = {name: split for name, split in splits.items() if split.tags is not None}
    data_labels = data_label_list(labelled, declared) if labelled or declared else None
    model_labels = model_label_list(config)
    if data_labels is None and model_labels is None:
        raise UserError("No labelled data and no label names in the model's config: give labelled training or "
                        "validation data, or a fine-tuned model.")
    label_list, reused = choose_label_list(data_labels, model_labels, model_args.ignore_mismatched_sizes,
                                           model_args.model_name_or_path)
    logger.info("%d labels: %s", len(label_list), ", ".join(label_list))
    return label_list, reused


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


def build_trainer(model, tokenizer, training_args, data_args, splits, features, label_list, settings):
    evaluating = "validation" in splits and (training_args.do_eval or training_args.eval_strategy != "no")
    scorer = None
    if evaluating:
        split = splits["validation"]
        decoder = WordDecoder(features["validation"], [len(words) for words in split.tokens])
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
    # are held (EntityScorer takes batches and gives the scores on the last).
    training_args.batch_eval_metrics = True
    callbacks = []
    if data_args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(data_args.early_stopping_patience, data_args.early_stopping_threshold))
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=features.get("train") if training_args.do_train else None,
        eval_dataset=features["validation"] if evaluating else None,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=scorer,
        preprocess_logits_for_metrics=reduce_logits,
        callbacks=callbacks,
    )


def train(trainer, checkpoint, num_examples):
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # the tokenizer and the config with the real label names come along
    metrics = dict(result.metrics, train_samples=num_examples)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def evaluate(trainer, num_examples):
    metrics = trainer.evaluate()
    metrics["eval_samples"] = num_examples
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


def predict(trainer, split, features, label_list, data_args, output_dir):
    """Predict every word of the test split, batch by batch; score it when it is labelled; write
    predictions.txt and predictions.jsonl."""
    decoder = WordDecoder(features, [len(words) for words in split.tokens])
    model = trainer.model.eval()
    started = time.time()
    batches = (trainer.prediction_step(model, inputs, prediction_loss_only=False)[:2]
               for inputs in trainer.get_test_dataloader(features))
    loss = collect_words(batches, trainer.accelerator, decoder)
    tags, probabilities = decoder.result(label_list, outside_label(label_list), split.name)
    metrics = {"predict_samples": len(split.tokens), "predict_runtime": round(time.time() - started, 4)}
    if loss is not None:
        metrics["predict_loss"] = loss
    if split.tags is not None:
        scores = entity_scores(split.tags, tags, label_list, data_args.metric_mode,
                               data_args.return_entity_level_metrics)
        metrics.update({f"predict_{key}": value for key, value in scores.items()})
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
    if trainer.is_world_process_zero():
        write_atomic(os.path.join(output_dir, "predictions.txt"), predictions_text(tags))
        write_atomic(os.path.join(output_dir, "predictions.jsonl"),
                     predictions_jsonl(split.tokens, tags, probabilities, split.tags))


def publish(trainer, model_args, data_args, training_args):
    """Model card in output_dir, or a push to the hub with --push_to_hub."""
    card = {"finetuned_from": model_args.model_name_or_path, "tasks": "token-classification"}
    if data_args.dataset_name is not None:
        card["dataset_tags"] = data_args.dataset_name
        card["dataset"] = data_args.dataset_name
        if data_args.dataset_config_name is not None:
            card["dataset_args"] = data_args.dataset_config_name
            card["dataset"] = f"{data_args.dataset_name} {data_args.dataset_config_name}"
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.do_train:
        trainer.create_model_card(**card)


def cli(argv=None):
    arguments = parse_arguments((ModelArguments, DataTrainingArguments, TrainingArguments),
                                sys.argv[1:] if argv is None else argv)
    main(*arguments)


if __name__ == "__main__":
    exit_on_user_error(cli)
