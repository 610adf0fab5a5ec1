"""The steps both scripts take the same way, from parsed arguments to encoded features.

    splits, declared = read_data(data_args, model_args, needed)
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared)
    model = load_model(model_args, config, head_reused)
    settings, features = encode_splits(splits, tokenizer, config, label_list, data_args, max_length, ...)
    tags, probabilities, metrics = decode_and_score(batches, accelerator, split, features, label_list, data_args)
"""

import logging
import sys

from .data import load_splits
from .decoding import WordDecoder, collect_words
from .errors import UserError
from .labels import choose_label_list, data_label_list, inside_label_ids, model_label_list, outside_label
from .metrics import entity_scores
from .modeling import load_config, set_labels
from .summary import log_summary
from .tokenization import EncodingSettings, encode_split, load_fast_tokenizer, window_length

logger = logging.getLogger(__name__)


def setup_logging(script, main_process, other_level=logging.WARNING):
    """Log lines on stdout; this script's and nerkit's messages at INFO on the main process and at
    `other_level` on the others; the libraries' own chatter (progress bars, per-dataloader warnings)
    kept down."""
    import warnings

    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    for name in (script, "nerkit"):
        logging.getLogger(name).setLevel(logging.INFO if main_process else other_level)
    # On CPU-only machines a DataLoader with pin_memory=True only earns a warning each time.
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator is found.*")
    datasets.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity(logging.WARNING if main_process else max(other_level, logging.WARNING))

SPLIT_FILES = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}


def read_data(data_args, model_args, needed):
    """Every split given, checked, and the label names the data declares (or None).

    `needed` maps a split name to the flag that needs it ({"validation": "--do_eval"}); a missing one is a
    `UserError`. The --max_*_samples limits are applied here.
    """
    splits, declared = load_splits(data_args, model_args.cache_dir, model_args.token)
    for name, flag in needed.items():
        if name not in splits:
            raise UserError(f"{flag} needs a {name} split: give {SPLIT_FILES[name]}, or a dataset with a "
                            f"'{name}' split.")
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    return {name: split.select(limits[name]) for name, split in splits.items()}, declared


def load_tokenizer_and_labels(model_args, data_args, splits, declared):
    """The fast tokenizer (checked before any weights load), the config, and the label list with the
    names set in the config. Returns (tokenizer, config, label list, whether the pretrained head is kept)."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is None:
        raise UserError("Give --model_name_or_path, or --tokenizer_name when training from scratch with "
                        "--model_type.")
    tokenizer = load_fast_tokenizer(name, model_args.hub_kwargs())
    log_summary(splits)
    config = load_config(model_args, data_args.task_name)
    labelled = {name: split for name, split in splits.items() if split.tags is not None}
    data_labels = data_label_list(labelled, declared) if labelled or declared else None
    model_labels = model_label_list(config) if model_args.model_name_or_path else None
    if data_labels is None and model_labels is None:
        raise UserError("No labelled data and no label names in the model's config: give labelled training or "
                        "validation data, or a fine-tuned model.")
    label_list, head_reused = choose_label_list(data_labels, model_labels, model_args.ignore_mismatched_sizes,
                                                model_args.model_name_or_path)
    logger.info("%d labels: %s", len(label_list), ", ".join(label_list))
    set_labels(config, label_list)
    return tokenizer, config, label_list, head_reused


def encode_splits(splits, tokenizer, config, label_list, data_args, max_length, main_process_first,
                  flag="--max_seq_length"):
    """Window features for every split (see nerkit.tokenization); `main_process_first` is the launcher's
    context manager, so the main process tokenizes first. `flag` names the window length in messages."""
    settings = EncodingSettings(
        max_length=window_length(tokenizer, config, max_length, flag),
        stride=data_args.stride,
        inside_ids=inside_label_ids(label_list) if data_args.label_all_tokens else None,
    )
    with main_process_first():
        features = {name: encode_split(split, tokenizer, config.label2id, settings,
                                       data_args.preprocessing_num_workers)
                    for name, split in splits.items()}
    # Inference order does not change any result (words are collected by example id), so evaluation and
    # prediction batches are drawn longest first and hold little padding.
    features = {name: split_features if name == "train" else longest_first(split_features)
                for name, split_features in features.items()}
    return settings, features


def longest_first(features):
    lengths = features.map(lambda batch: {"length": [len(ids) for ids in batch["input_ids"]]}, batched=True)
    return lengths.sort("length", reverse=True).remove_columns("length")


def decode_and_score(batches, accelerator, split, features, label_list, data_args):
    """Words and scores of a split from (loss, logits) batches in dataloader order.

    Returns (tags per example, probabilities per example, metrics without prefix: loss when the batches
    had labels, the entity scores when the split is labelled)."""
    decoder = WordDecoder(features, [len(words) for words in split.tokens], data_args.decoding)
    loss = collect_words(batches, accelerator, decoder)
    tags, probabilities = decoder.result(label_list, outside_label(label_list), split.name)
    metrics = {} if loss is None else {"loss": loss}
    if split.tags is not None:
        metrics.update(entity_scores(split.tags, tags, label_list, data_args.metric_mode,
                                     data_args.return_entity_level_metrics))
    return tags, probabilities, metrics


def check_finite_loss(loss, step):
    """Stop at once when the training loss stops being a number, instead of training on garbage."""
    import torch

    if not torch.isfinite(loss).all():
        raise UserError(f"The training loss became {loss.float().mean().item()} at optimizer step {step}. Lower "
                        "the learning rate, add warmup, or train without fp16 (bf16 or fp32), then run again.")
