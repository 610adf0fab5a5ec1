"""The steps both scripts take the same way, from parsed arguments to encoded features.

    splits, declared = read_data(data_args, model_args, needed)
    tokenizer, config, label_list, head_reused = load_tokenizer_and_labels(model_args, data_args, splits, declared,
                                                                           training)
    settings = encoding_settings(tokenizer, config, label_list, data_args, max_length)  # before any weights
    features = encode_splits(splits, tokenizer, config, settings, data_args, main_process_first)
    model = load_model(model_args, config, head_reused, training)  # nerkit.modeling, once the data is known good
    tags, probabilities, metrics = decode_and_score(batches, accelerator, split, features, label_list, data_args,
                                                    scheme)
"""

import dataclasses
import logging
import sys
import warnings

from .data import load_splits
from .decoding import WordDecoder, collect_words
from .errors import UserError
from .labels import (check_model_labels, choose_label_list, data_label_list, inside_label_ids, model_label_list,
                     outside_label)
from .metrics import check_strict_mode, entity_scores
from .modeling import check_model_folder, check_unnamed_head, load_config, set_labels
from .schemes import decide_scheme, saved_scheme, split_label
from .summary import log_summary
from .tokenization import EncodingSettings, encode_split, load_fast_tokenizer, window_length

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LogLevels:
    """What each process logs: on the main process this script's and nerkit's lines (`ours`) and the
    libraries' own (`libraries`); on the others everything at `others`. Every process reads the same data
    and model, so at WARNING each warning would come once a process."""

    ours: int = logging.INFO
    libraries: int = logging.WARNING
    others: int = logging.ERROR


def trainer_log_levels(training_args):
    """LogLevels from the Trainer's --log_level and --log_level_replica, as upstream's run_ner.py reads them:
    --log_level (passive: as by default) sets every line of the main process, --log_level_replica those of
    the others, but for its default, warning, which means error here (see LogLevels)."""
    from transformers.training_args import trainer_log_levels as named

    main, replica = named[training_args.log_level], named[training_args.log_level_replica]
    levels = LogLevels() if main == -1 else LogLevels(main, main)
    if replica in (-1, logging.WARNING):
        return levels
    return dataclasses.replace(levels, others=replica)


def setup_logging(script, main_process, levels=LogLevels()):
    """Log lines on stdout at `levels`; the libraries' own chatter (progress bars, per-dataloader warnings)
    kept down, and transformers' bars (loading and writing weights) shown only on a terminal."""
    import datasets
    import transformers

    from .progress import interactive

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    for name in (script, "nerkit"):
        logging.getLogger(name).setLevel(levels.ours if main_process else levels.others)
    # On CPU-only machines a DataLoader with pin_memory=True only earns a warning each time.
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator is found.*")
    datasets.utils.logging.set_verbosity(levels.libraries if main_process else levels.others)
    datasets.disable_progress_bars()
    library_messages_once()
    transformers.utils.logging.set_verbosity(levels.libraries if main_process else levels.others)
    if not interactive():
        transformers.utils.logging.disable_progress_bar()


def library_messages_once():
    """datasets and huggingface_hub print through their own handler and also pass each message on to the root
    logger, which the scripts configure: every warning came out twice. Their own handler alone keeps it once."""
    import datasets
    import huggingface_hub

    datasets.utils.logging.disable_propagation()
    huggingface_hub.utils.logging.disable_propagation()


SPLIT_FILES = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}


def read_data(data_args, model_args, needed, scored=None, only_needed=False):
    """Every split given (with `only_needed`, those of `needed` only: a split the run does not use is not
    read, so nothing in it can stop the run), checked, and the label names the data declares (or None).

    `needed` maps a split name to the flag that needs it ({"validation": "--do_eval"}); a missing one is a
    `UserError`. A split that is trained on or scored must carry tags: those in `scored` (split name to
    what uses it), by default the train and validation splits of `needed`. The --max_*_samples limits are
    applied here.
    """
    wanted = tuple(needed) if only_needed else ("train", "validation", "test")
    splits, declared = load_splits(data_args, model_args.cache_dir, model_args.token, wanted)
    for name, flag in needed.items():
        if name not in splits and data_args.dataset_name:  # and a file cannot join a dataset's splits
            drop = f"Drop {flag.split(' (')[0]}, or give" if flag.startswith("--") else "Give"
            raise UserError(f"{flag} needs a {name} split, and the dataset {data_args.dataset_name} has none. {drop} "
                            "every split as files (--train_file, --validation_file, --test_file) instead of "
                            "--dataset_name, the missing one included.")
        if name not in splits:
            raise UserError(f"{flag} needs a {name} split: give {SPLIT_FILES[name]}, or a dataset with a "
                            f"'{name}' split.")
    scored = {name: flag for name, flag in needed.items() if name != "test"} if scored is None else scored
    for name, flag in scored.items():
        if name in splits and splits[name].tags is None:
            raise UserError(missing_tags_message(splits[name], flag, data_args))
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    return {name: split.select(limits[name]) for name, split in splits.items()}, declared


def missing_tags_message(split, flag, data_args):
    """Why a split without tags cannot be used, and where its tags are looked for."""
    use = "train on" if split.name == "train" else "score"
    column = data_args.label_column_name or f"{data_args.task_name or 'ner'}_tags"
    return (f"{split.source}: the {split.name} data has words but no tags, and {flag} needs tags to {use}. "
            f"Tags are read from the column '{column}' (else the second column; in a CoNLL file the last column "
            "of two or more): add them, name their column with --label_column_name, or give a labelled file."
            f"{odd_separator_hint(split.tokens)}")


def odd_separator_hint(tokens):
    """Where most words of a one-column file hold one space character that is not ASCII (a no-break or an
    ideographic space) before something shaped like a tag, the file most likely separates its columns with
    it: the hint that says so, else ''."""
    words = [word for sentence in tokens for word in sentence]
    found = {}
    for word in words:
        odd = [character for character in word if character.isspace() and character not in " \t"]
        if len(odd) == 1:
            tag = word.rsplit(odd[0], 1)[1]
            if tag == "O" or split_label(tag)[0] is not None:
                found[odd[0]] = found.get(odd[0], 0) + 1
    character, count = max(found.items(), key=lambda item: item[1], default=(None, 0))
    if count * 2 <= len(words):
        return ""
    return (f" Its words end in what look like tags after U+{ord(character):04X} ({count} of {len(words)} words), "
            "a space that separates no columns: only tabs and ASCII spaces do. Replace it with a tab.")


def load_tokenizer_and_labels(model_args, data_args, splits, declared, training):
    """The fast tokenizer (checked before any weights load), the config, and the label list with the
    names and the tagging scheme (see nerkit.schemes) set in the config; --metric_mode strict is checked
    against that scheme here, before any weights load. `training`: whether the run trains (a train split
    may be given to a run that only scores, which keeps the model's head). Returns (tokenizer, config,
    label list, whether the pretrained head is kept)."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is None:
        raise UserError("Give --model_name_or_path, or --tokenizer_name when training from scratch with "
                        "--model_type.")
    check_model_folder(model_args.model_name_or_path, "--model_name_or_path", bool(model_args.config_name))
    tokenizer = load_fast_tokenizer(name, model_args.hub_kwargs())
    config = load_config(model_args, data_args.task_name)
    labelled = {name: split for name, split in splits.items() if split.tags is not None}
    data_labels = data_label_list(labelled, declared) if labelled or declared else None
    model_labels = model_label_list(config) if model_args.model_name_or_path else None
    if model_labels is not None:
        check_model_labels(model_labels, model_args.model_name_or_path)
    if data_labels is None and model_labels is None:
        raise UserError("No labelled data and no label names in the model's config: give labelled training or "
                        "validation data, or a fine-tuned model.")
    label_list, head_reused = choose_label_list(data_labels, model_labels, model_args.ignore_mismatched_sizes,
                                                model_args.model_name_or_path, training=training)
    if model_args.model_name_or_path and model_labels is None:
        check_unnamed_head(model_args, label_list, training=training)
    logger.info("%d labels: %s", len(label_list), ", ".join(label_list))
    if training and len(label_list) == 1:
        logger.warning("Every tag in the data is %s: the model can learn nothing but to predict it, and entity "
                       "scores will be 0. Check that --label_column_name (or the file's last column) holds the tags.",
                       label_list[0])
    # A fine-tuned head keeps the scheme it was trained in, unless the training tags say otherwise; the data's
    # tags are read with any the head does not know (a run that only scores may have them).
    known = label_list + sorted(set(data_labels or ()) - set(label_list))
    scheme, source = decide_scheme(splits, known, saved_scheme(config) if head_reused else None)
    log_summary(splits, known, scheme, source)
    if data_args.metric_mode == "strict":
        check_strict_mode(label_list, scheme, source)
    set_labels(config, label_list, scheme)
    return tokenizer, config, label_list, head_reused


def encoding_settings(tokenizer, config, label_list, data_args, max_length, flag="--max_seq_length"):
    """How examples become windows: the window length (a `max_length` too small for any word is a
    `UserError`, raised here, before any weights load), the stride and the --label_all_tokens labels.
    `flag` names the window length in messages."""
    return EncodingSettings(
        max_length=window_length(tokenizer, config, max_length, flag),
        stride=data_args.stride,
        inside_ids=inside_label_ids(label_list) if data_args.label_all_tokens else None,
    )


def encode_splits(splits, tokenizer, config, settings, data_args, main_process_first):
    """Window features for every split (see nerkit.tokenization); `main_process_first` is the launcher's
    context manager, so the main process tokenizes first."""
    with main_process_first():
        features = {name: encode_split(split, tokenizer, config.label2id, settings,
                                       data_args.preprocessing_num_workers)
                    for name, split in splits.items()}
    # A split without tags is drawn longest first: its batches hold little padding, and the order changes no
    # label (words are collected by example id). A tagged split keeps the data's order, for its loss: the
    # Trainer's is a mean of batch means, so the batches decide it, and in the data's order it is upstream's
    # figure for the same model (sorted, it came out 0.67 against upstream's 0.55 on upstream's own test data).
    return {name: longest_first(split_features) if splits[name].tags is None else split_features
            for name, split_features in features.items()}


def longest_first(features):
    from .speed import input_lengths  # read from the Arrow column, no row decoded

    lengths = features.add_column("length", input_lengths(features))
    with warnings.catch_warnings():  # pyarrow 25 deprecates an argument datasets' sort passes: not the user's
        warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
        return lengths.sort("length", reverse=True).remove_columns("length")


def inference_batching(features, batch_size, num_processes):
    """DataLoader arguments for an evaluation or prediction split. An unlabelled split comes longest first
    (`encode_splits`, the tagger) and, in one process, is cut by `length_batches`; a labelled split keeps
    batches of `batch_size` in the data's order (its reported loss is a mean of batch means, upstream's
    figure), as do several processes, to which accelerate deals the batches out in turn."""
    if num_processes > 1 or "labels" in features.column_names:
        return {"batch_size": batch_size}
    from .speed import input_lengths

    return {"batch_sampler": length_batches(input_lengths(features), batch_size)}


def length_batches(lengths, batch_size):
    """Consecutive batches of at most `batch_size` indices, each also ending where the next length is
    under half the batch's first: in features sorted longest first, short sentences are then not padded to
    the windows of a long document (on WNUT-16 test sentences with three 1,200-word documents, one such
    batch padded 2,000 sub-tokens, and the tagger was 6-11% slower in fp32, 15-18% with --int8)."""
    batches = []
    for index, length in enumerate(lengths):
        if not batches or len(batches[-1]) == batch_size or 2 * length < lengths[batches[-1][0]]:
            batches.append([])
        batches[-1].append(index)
    return batches


def decode_and_score(batches, accelerator, split, features, label_list, data_args, scheme):
    """Words and scores of a split from (loss, logits) batches in dataloader order; `scheme` is the
    model's tagging scheme (nerkit.schemes.model_scheme), for Viterbi decoding and strict scoring.

    Returns (tags per example, probabilities per example, metrics without prefix: loss when the batches
    had labels, the entity scores when the split is labelled)."""
    decoder = WordDecoder(features, [len(words) for words in split.tokens], data_args.decoding)
    loss = collect_words(batches, accelerator, decoder)
    tags, probabilities = decoder.result(label_list, outside_label(label_list), split.name, scheme)
    metrics = {} if loss is None else {"loss": loss}
    if split.tags is not None:
        metrics.update(entity_scores(split.tags, tags, label_list, data_args.metric_mode,
                                     data_args.return_entity_level_metrics, scheme))
    return tags, probabilities, metrics


def check_finite_loss(loss, step, accelerator):
    """Stop at once when the training loss stops being a number, instead of training on garbage.

    Collective: every process calls it at every step and looks at the loss averaged over all of them, so
    they all stop together (a process stopping alone would leave the others waiting in their next
    all-reduce)."""
    import torch

    mean = accelerator.reduce(loss.detach().float().mean(), reduction="mean")
    if not torch.isfinite(mean):
        raise UserError(f"The training loss became {mean.item()} at optimizer step {step}. Lower the learning rate, "
                        "add warmup, or train without fp16 (bf16 or fp32), then start afresh with "
                        "--overwrite_output_dir or another --output_dir (resuming this run's checkpoints would keep "
                        "its learning rate schedule).")
