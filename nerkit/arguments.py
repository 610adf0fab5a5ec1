"""The task's own arguments. Training options come from `transformers.TrainingArguments`, never re-declared.

Field names, defaults and meanings follow the upstream `run_ner.py`; fields after the upstream ones are
this suite's additions and are listed in the README.
"""

import argparse
import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from .errors import UserError


@dataclass
class ModelArguments:
    """Which model, config and tokenizer to fine-tune, and where they come from."""

    model_name_or_path: str = field(
        metadata={"help": "Path to pretrained model or model identifier from huggingface.co/models"}
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Pretrained config name or path if not the same as model_name"}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Pretrained tokenizer name or path if not the same as model_name"}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where do you want to store the pretrained models downloaded from huggingface.co"},
    )
    model_revision: str = field(
        default="main",
        metadata={"help": "The specific model version to use (can be a branch name, tag name or commit id)."},
    )
    token: str | None = field(
        default=None,
        metadata={
            "help": "The token to use as HTTP bearer authorization for remote files. If not specified, will use "
            "the token generated when running `hf auth login`. It is never written to any output file."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Whether to trust the execution of code from datasets/models defined on the Hub. Only set "
            "this for repositories you trust and whose code you have read."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Train a new classification head when the model's head was trained for other labels "
            "(a different number of labels or a different label set)."
        },
    )

    def hub_kwargs(self):
        """The keyword arguments every `from_pretrained` call of this run shares."""
        return {
            "cache_dir": self.cache_dir,
            "revision": self.model_revision,
            "token": self.token,
            "trust_remote_code": self.trust_remote_code,
        }


@dataclass
class DataTrainingArguments:
    """What data to train, evaluate and predict on, and how to turn it into model inputs."""

    task_name: str | None = field(default="ner", metadata={"help": "The name of the task (ner, pos...)."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The name of the dataset to use (via the datasets library), or a local dataset folder."},
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration name of the dataset to use (via the datasets library)."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "The input training data file (.json, .jsonl, .csv, or a CoNLL column file)."},
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "An optional input evaluation data file to evaluate on (same formats as train_file)."},
    )
    test_file: str | None = field(
        default=None,
        metadata={"help": "An optional input test data file to predict on; labels are optional."},
    )
    text_column_name: str | None = field(
        default=None, metadata={"help": "The column name of text to input in the file (a csv or JSON file)."}
    )
    label_column_name: str | None = field(
        default=None,
        metadata={"help": "The column name of label to input in the file (a csv or JSON file); in a CoNLL file the "
                          "column's index, in a CoNLL-U file a field (upos, xpos, ...), an index or a MISC key."},
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Accepted for upstream's command lines; it changes nothing here, since the "
                                         "tokenized sets are never cached (each run tokenizes its data afresh)."}
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "The number of processes to use for the preprocessing."},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": "The maximum total input sequence length after tokenization (default: the model's maximum). "
            "Longer examples are split into overlapping windows (see --stride); no word is ever dropped."
        },
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={
            "help": "Whether to pad all samples to model maximum sentence length. If False, will pad the samples "
            "dynamically when batching to the maximum length in the batch. More efficient on GPU but very bad "
            "for TPU."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "For debugging purposes or quicker training, truncate the number of training examples."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "For debugging purposes or quicker training, truncate the number of evaluation examples."},
    )
    max_predict_samples: int | None = field(
        default=None,
        metadata={"help": "For debugging purposes or quicker training, truncate the number of prediction examples."},
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "Train on every sub-token of a word (the later ones with the word's inside label, B-X becoming "
            "I-X) instead of the first one only. Scores are per word either way."
        },
    )
    return_entity_level_metrics: bool = field(
        default=False,
        metadata={"help": "Whether to return all the entity levels during evaluation or just the overall ones."},
    )
    # Additions of this suite.
    file_format: str = field(
        default="auto",
        metadata={
            "help": "Read local files as this format instead of choosing by extension: conll, conllu, json (JSON "
            "Lines or a JSON array), csv or parquet.",
            "choices": ["auto", "conll", "conllu", "json", "csv", "parquet"],
        },
    )
    stride: int = field(
        default=64,
        metadata={
            "help": "Overlap, in sub-tokens, between consecutive windows of an example longer than the window "
            "(--max_seq_length; --max_length in run_ner_no_trainer.py), at most half a window. Each word is "
            "predicted from the window where it has the most context."
        },
    )
    metric_mode: str = field(
        default="default",
        metadata={
            "help": "seqeval matching: 'default' (lenient, conlleval-style, what upstream reports) or 'strict' "
            "(entities must follow the run's tagging scheme, decided from the training tags: IOB1, IOB2, IOBES, "
            "BILOU, IOE1 or IOE2).",
            "choices": ["default", "strict"],
        },
    )
    decoding: str = field(
        default="viterbi",
        metadata={
            "help": "How word labels are chosen: 'viterbi' (the most probable sequence that obeys the tagging "
            "scheme the training tags follow, e.g. in IOB2 no I-X after O or B-Y; +0.006 F1 on WNUT-16, see "
            "bench/RESULTS.md) or 'argmax' (each word's most probable label, what upstream does).",
            "choices": ["argmax", "viterbi"],
        },
    )
    label_list: str | None = field(
        default=None,
        metadata={
            "help": "Names for integer labels that the data does not name: a comma-separated list (O,B-PER,I-PER) "
            "or a file with one name per line, in id order."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in a non-empty output_dir: the earlier run's checkpoints and results there are "
            "removed before training (after every flag is checked). Without it, run_ner.py resumes from the "
            "folder's last checkpoint (run_ner_no_trainer.py asks for --resume_from_checkpoint), and any other "
            "non-empty folder is refused."
        },
    )
    check_data: bool = field(
        default=False,
        metadata={"help": "Only check the data: read every split given, load the tokenizer (no weights), print a "
                          "report (counts, windows, leakage, unseen entities, inconsistent annotation, scheme "
                          "breaks) and write data_report.json into output_dir, then stop (exit status 0)."},
    )
    # Speed: the same work, done faster (see nerkit/speed.py, nerkit/embedding_rows.py, nerkit/dropout.py).
    # All are on unless turned off.
    packing: bool = field(
        default=True,
        metadata={"help": "Train on padding-free batches, checked first to reproduce the model's padded outputs: "
                          "each random batch in one row, with attention per bucket of similar lengths on a CPU "
                          "and flash-attention 2's variable-length kernel on a GPU that has it, else packed rows "
                          "with block-diagonal attention. --no_packing trains on padded batches."},
    )
    auto_mixed_precision: bool = field(
        default=True,
        metadata={"help": "Use bf16 where the hardware does it well (CUDA GPUs with bf16, CPUs with bf16 matrix "
                          "instructions: AMX-BF16, AVX512-BF16) unless a precision is given. "
                          "--no_auto_mixed_precision keeps fp32."},
    )
    train_used_embedding_rows: bool = field(
        default=True,
        metadata={"help": "Train only the word-embedding rows of tokens the training data uses, where that is "
                          "the same training (torch's AdamW, no weight decay): the other rows get no gradient and "
                          "would not move, but a whole table costs an optimizer step over every row. "
                          "--no_train_used_embedding_rows trains the whole table."},
    )
    fast_dropout_masks: bool = field(
        default=True,
        metadata={"help": "When training on a CPU (where torch's dropout masks, from MKL, are slow to draw), "
                          "draw them 16 bits at a time: the same Bernoulli distribution, p "
                          "rounded to 1/65,536. --no_fast_dropout_masks keeps torch's dropout."},
    )
    fused_projections: bool = field(
        default=True,
        metadata={"help": "When training in bf16 on a CPU, compute attention's query, key and value "
                          "projections as one matrix multiply (the same weights and checkpoints). "
                          "--no_fused_projections keeps three."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many evaluations without improvement of metric_for_best_model "
            "(needs --load_best_model_at_end and an eval_strategy)."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={"help": "How much metric_for_best_model must improve to count as an improvement."},
    )

    def __post_init__(self):
        if self.dataset_name is None and not (self.train_file or self.validation_file or self.test_file):
            raise ValueError(
                "Need either --dataset_name or a --train_file/--validation_file/--test_file to read data from."
            )
        if self.task_name:
            self.task_name = self.task_name.lower()
        at_least("--stride", self.stride, 0, "sub-tokens")


class BriefErrors:
    """argparse answers a mistyped flag or value with its whole usage (about 140 lines for run_ner.py) and
    the error last; here the error alone, as a `UserError` (one paragraph, exit status 2)."""

    def error(self, message):
        message = message.rstrip(".")  # some of argparse's messages end in a full stop, most do not
        raise UserError(f"{message[:1].upper()}{message[1:]}. Run with --help to see all flags.")


class ArgumentParser(BriefErrors, HfArgumentParser):
    """HfArgumentParser, whose --no_X flags (for a bool that defaults to True) say what they do instead of
    repeating the help of --X, which says what X does when on."""

    def _add_dataclass_arguments(self, dtype):
        super()._add_dataclass_arguments(dtype)
        for action in self._actions:
            if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
                action.help = f"Turn --{action.dest} off (see --{action.dest})."
                action.default = argparse.SUPPRESS  # not "(default: False)": --X's default is the dest's


def at_least(flag, value, minimum, unit="", advice=""):
    """Refuse a numeric flag below `minimum` (None, a flag not given, passes)."""
    if value is not None and value < minimum:
        raise UserError(f"{flag} must be {minimum} or more{' ' + unit if unit else ''}, got {value}.{advice}")


def check_run_arguments(data_args, args):
    """What both training scripts refuse before anything is read, loaded or written (with
    --overwrite_output_dir the earlier run's results are removed before training: a bad flag must stop
    the run first). `args` is TrainingArguments or run_ner_no_trainer's LoopArguments: the fields checked
    here have the same names in both."""
    from .speed import check_processes_fit_gpus

    check_processes_fit_gpus(getattr(args, "use_cpu", False))
    check_output_dir(args.output_dir)
    if data_args.dataset_name and (data_args.train_file or data_args.validation_file or data_args.test_file):
        given = [flag for flag in ("--train_file", "--validation_file", "--test_file") if getattr(data_args, flag[2:])]
        raise UserError(f"--dataset_name {data_args.dataset_name} and {'/'.join(given)} both name data, and only the "
                        f"dataset would be read. Drop --dataset_name to use your files, or drop {'/'.join(given)} "
                        "to use the dataset.")
    # Limits of 0 would leave empty splits that fail deep inside tokenization or training.
    for flag in ("--max_train_samples", "--max_eval_samples", "--max_predict_samples"):
        at_least(flag, getattr(data_args, flag[2:]), 1, "examples", " Leave it out to use every example.")
    for flag in ("--per_device_train_batch_size", "--per_device_eval_batch_size", "--gradient_accumulation_steps"):
        at_least(flag, getattr(args, flag[2:]), 1)
    at_least("--num_train_epochs", args.num_train_epochs, 0)  # 0 evaluates and predicts without training
    at_least("--preprocessing_num_workers", data_args.preprocessing_num_workers, 0, "processes",
             " 0, or leaving it out, tokenizes in this process.")
    if not args.learning_rate > 0:  # also NaN
        raise UserError(f"--learning_rate must be more than 0, got {args.learning_rate}.")
    check_optimizer_numbers(args)
    check_scheduler(args)
    if args.seed is not None and not 0 <= args.seed < 2 ** 32:  # numpy's limits, which set_seed reaches
        raise UserError(f"--seed must be between 0 and {2 ** 32 - 1}, got {args.seed}.")


# (flag, lowest, the bound it stays below or None, advice): numbers the optimizer, the scheduler or the data
# loader would refuse only once built, after the weights load, or take silently and train wrongly (a negative
# --max_grad_norm flips every gradient in a clipping step). A field one script lacks is skipped; the Trainer's
# --warmup_steps is refused by TrainingArguments itself.
OPTIMIZER_NUMBERS = [
    ("--max_grad_norm", 0, None, " 0 turns clipping off."),
    ("--weight_decay", 0, None, ""),
    ("--adam_beta1", 0, 1, " 0.9 is usual."),
    ("--adam_beta2", 0, 1, " 0.999 is usual."),
    ("--adam_epsilon", 0, None, " 1e-8 is usual."),
    ("--label_smoothing_factor", 0, 1, " 0 turns it off; 0.1 is usual."),
    ("--num_warmup_steps", 0, None, ""),
    ("--dataloader_num_workers", 0, None, " 0 loads batches in the training process."),
]


def check_optimizer_numbers(args):
    for flag, lowest, below, advice in OPTIMIZER_NUMBERS:
        value = getattr(args, flag[2:], None)
        if value is None:
            continue
        if not value >= lowest or below is not None and value >= below:  # `not >=` also catches NaN
            allowed = f"at least {lowest}" if below is None else f"from {lowest} up to {below} (not {below} itself)"
            raise UserError(f"{flag} must be {allowed}, got {value}.{advice}")


# Schedulers whose step needs the validation loss: the Accelerate loop steps its scheduler without one.
STEPPED_WITH_A_METRIC = ("reduce_lr_on_plateau", "greedy")
# What the schedulers that cannot run without settings need, for the message.
SCHEDULER_SETTINGS = {"cosine_with_min_lr": '{"min_lr_rate": 0.1}', "cosine_warmup_with_min_lr": '{"min_lr_rate": 0.1}',
                      "warmup_stable_decay": '{"num_decay_steps": 100}'}


def check_scheduler(args):
    """Build the --lr_scheduler_type on a stand-in optimizer, with the --lr_scheduler_kwargs where the script
    has the flag: a scheduler that needs settings not given (cosine_with_min_lr's min_lr, warmup_stable_decay's
    num_decay_steps) or given settings it does not take would fail only after the weights load."""
    import torch
    from transformers import get_scheduler

    name = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    takes_settings = hasattr(args, "lr_scheduler_kwargs")
    if not takes_settings and name in STEPPED_WITH_A_METRIC:
        raise UserError(f"--lr_scheduler_type {name} steps on the validation loss, which run_ner_no_trainer.py does "
                        "not give its scheduler. Choose another type, or use run_ner.py, whose Trainer gives it.")
    settings = (getattr(args, "lr_scheduler_kwargs", None) or {}) if takes_settings else {}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        get_scheduler(name, optimizer=optimizer, num_warmup_steps=0, num_training_steps=10,
                      scheduler_specific_kwargs=dict(settings))
    except (TypeError, ValueError) as error:
        reason = str(error).rstrip(".")
        example = f" (for example {SCHEDULER_SETTINGS[name]!r})" if name in SCHEDULER_SETTINGS else ""
        fix = (f"Give its settings with --lr_scheduler_kwargs as JSON{example}, or choose another type."
               if takes_settings else
               "run_ner_no_trainer.py has no --lr_scheduler_kwargs: choose another type, or use run_ner.py, which "
               "takes them.")
        raise UserError(f"--lr_scheduler_type {name} cannot be set up with "
                        f"{'--lr_scheduler_kwargs ' + json.dumps(settings) if settings else 'no settings'}: "
                        f"{reason}. {fix}") from None


def check_output_dir(output_dir):
    """--output_dir must be a folder, or a path where one can be made: a file there (or in a parent's place)
    would fail only when the first file is written, after the model is loaded or trained."""
    if output_dir is None:
        raise UserError("Give --output_dir: the folder for the model, the scores and the predictions.")
    blocker = file_in_the_way(output_dir)
    if blocker == os.path.abspath(output_dir):
        raise UserError(f"--output_dir {output_dir} is a file, not a folder. Give the path of a folder (new or "
                        "existing) for the model, the scores and the predictions.")
    if blocker is not None:
        raise UserError(f"--output_dir {output_dir} cannot be created: {blocker} is a file, not a folder. Give "
                        "another --output_dir.")
    folder = unwritable_folder(output_dir)
    if folder is not None:
        made = "written to" if folder == os.path.abspath(output_dir) else f"created: {folder} is not writable"
        raise UserError(f"--output_dir {output_dir} cannot be {made} by this user. Give a folder you can write "
                        "to, or change its permissions.")


def nearest_existing(path):
    """`path` made absolute if it exists, else its nearest existing parent."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def unwritable_folder(path):
    """The folder `path` is (or the nearest existing parent, where the rest would be made) when this user
    cannot create files in it, else None."""
    folder = nearest_existing(path)
    return None if os.access(folder, os.W_OK | os.X_OK) else folder


def file_in_the_way(path):
    """The nearest existing part of `path` (itself, else a parent) when it is not a folder, else None."""
    path = nearest_existing(path)
    return None if os.path.isdir(path) else path


def parse_arguments(dataclass_types, argv, defaults=None, hidden=(), explain=None):
    """Parse `argv` into the dataclasses; a single `.json` argument is read as the whole configuration.
    `defaults` ({field: typed value}) fill fields that neither form names; the flags of `hidden` fields are
    read (a script may refuse them with a message) but left out of --help.

    Invalid values (a `__post_init__` ValueError, an unknown key in the JSON file, a value argparse cannot
    read, an unknown flag) become a `UserError`. `explain(values, error)`, given the values as parsed (field
    name to value) and a dataclass's ValueError, may return a message that says more than the library's.
    """
    parser = ArgumentParser(dataclass_types)
    for action in parser._actions:
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
    defaults = defaults or {}
    given = None  # the values as parsed, before the dataclasses check them
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            path = os.path.abspath(argv[0])
            if not os.path.isfile(path):
                raise UserError(f"The configuration file {argv[0]} does not exist.")
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
            if not isinstance(values, dict):
                raise UserError(f"The configuration file {argv[0]} holds {type(values).__name__}, not an object of "
                                'arguments: write {"model_name_or_path": "...", "do_train": true, ...}.')
            check_value_types(dataclass_types, values, argv[0])
            given = {**field_defaults(dataclass_types), **defaults, **values}
            return parser.parse_dict({**defaults, **values})
        named = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
        extra = [item for key, value in defaults.items() if f"--{key}" not in named
                 for item in (f"--{key}", str(value))]
        # unknown flags first: building the dataclasses may already refuse a value the flag was meant to set
        parsed, unknown = parser.parse_known_args([*argv, *extra])
        if unknown:
            raise UserError(f"Unknown argument(s): {' '.join(unknown)}. Run with --help to see all flags.")
        given = vars(parsed)
        return parser.parse_args_into_dataclasses(args=[*argv, *extra])
    except json.JSONDecodeError as error:
        raise UserError(f"The configuration file {argv[0]} is not valid JSON: {error}.") from None
    except (ValueError, TypeError) as error:
        said = explain(given, error) if explain and given is not None and isinstance(error, ValueError) else None
        raise UserError(said or f"Invalid arguments: {error}") from None
    except ImportError as error:  # TrainingArguments checks some packages at once (--deepspeed's)
        raise UserError(f"The arguments need a package that is not installed: {str(error).rstrip('. ')}. Install "
                        "it, or leave out the flag that needs it.") from None


PLAIN_TYPES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def plain_type(hint):
    """(the plain type of a field's annotation, whether it may be None); (None, True) for anything else
    (lists, dicts, unions of several types), which the dataclasses check themselves."""
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    optional = len(arguments) < len(typing.get_args(hint))
    if not arguments:
        return (hint if hint in PLAIN_TYPES else None), hint not in PLAIN_TYPES
    if len(arguments) == 1 and arguments[0] in PLAIN_TYPES:
        return arguments[0], optional
    return None, True


def field_defaults(dataclass_types):
    """{field: default} of the dataclasses' fields that have one."""
    return {field_.name: field_.default for dataclass_type in dataclass_types
            for field_ in dataclasses.fields(dataclass_type) if field_.default is not dataclasses.MISSING}


def check_value_types(dataclass_types, values, source):
    """A JSON configuration's values against the fields' types, as the command line's parser converts flags:
    the dataclasses take any value, and a string epoch count or a null learning rate would otherwise fail
    deep in training, after the weights load. A key that is no field is named with its file."""
    names = {field_.name for dataclass_type in dataclass_types for field_ in dataclasses.fields(dataclass_type)}
    unknown = sorted(key for key in values if key not in names)
    if unknown:
        raise UserError(f"The configuration file {source} has keys that are no flag of this script: "
                        f"{', '.join(unknown)}. Remove them, or correct their spelling (--help lists the flags).")
    for dataclass_type in dataclass_types:
        try:
            hints = typing.get_type_hints(dataclass_type)
        except Exception:  # an annotation that does not resolve: the written one, checked where plain
            hints = {field_.name: field_.type for field_ in dataclasses.fields(dataclass_type)}
        for field_ in dataclasses.fields(dataclass_type):
            if field_.name not in values:
                continue
            value = values[field_.name]
            expected, optional = plain_type(hints.get(field_.name))
            if expected is None or value is None and (optional or field_.default is None):
                continue
            if not fits(value, expected):
                raise UserError(f'The configuration file {source} gives "{field_.name}": {json.dumps(value)}, which '
                                f"is not {PLAIN_TYPES[expected]}. Write it as {example_value(expected, value)}, "
                                "as --help describes the flag.")


def fits(value, expected):
    """Whether a JSON value is of the plain type `expected`: JSON's true and false only for a bool (Python
    counts them as ints), a whole number also for a float."""
    if expected is bool or isinstance(value, bool):
        return expected is bool and isinstance(value, bool)
    return isinstance(value, expected) or expected is float and isinstance(value, int)


def example_value(expected, value):
    """How a JSON value of the `expected` plain type might be written, from the wrong `value`."""
    if expected is bool:
        return "true or false"
    if expected is str:
        return json.dumps(str(value)) if value is not None else "a string in quotes"
    if isinstance(value, str):
        try:
            return json.dumps(expected(value))
        except ValueError:
            pass
    return f"{PLAIN_TYPES[expected]} without quotes"


def launcher_defaults():
    """TrainingArguments defaults that the launcher decides. `accelerate launch --cpu` (ACCELERATE_USE_CPU)
    puts accelerate's state on the CPU, but TrainingArguments' own device stays cuda:0 on a machine with a
    GPU, and the run failed with the model on one device and its batches on the other: it is --use_cpu.
    Under torchrun on the CPU, transformers 5.23 with accelerate 1.15 sets up no distributed state (each
    rank sees one process, gathers nothing) unless told both the backend and the device: gloo on CPU."""
    import torch

    from .speed import launched_on_cpu

    asked = launched_on_cpu()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (asked or not torch.cuda.is_available()):
        return {"ddp_backend": "gloo", "use_cpu": True}
    return {"use_cpu": True} if asked else {}
