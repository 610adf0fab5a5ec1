"""What a trained folder tells a reader: the model card (README.md), the error analysis of each labelled
split (errors_<split>.json) and, when matplotlib is installed, confusion_matrix.png (entity types, per
word), errors.png and errors_test.png (error categories per entity type) and learning_curves.png (loss and
F1 per evaluation). For tags that name no entities (POS tags) the analysis, the pictures and the card's
scores go word by word, tag by tag."""

import logging
import os
import re
import shlex
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field

from .error_analysis import (
    CATEGORIES,
    SHOWN_EXAMPLES,
    SHOWN_PER_CONFUSION,
    TITLES,
    analyse_errors,
    analyse_tag_errors,
    card_section,
    summary_lines,
    tag_card_section,
    tag_summary_lines,
)
from .labels import saved_config
from .metrics import entity_scores
from .outputs import prediction_files, result_files, temporary_beside, write_atomic, write_json, write_together
from .progress import score_table
from .schemes import label_parts
from .summary import labels_without_entities
from .tokenization import class_that_drops_the_space

logger = logging.getLogger(__name__)

SECRET_FLAGS = ("--token", "--hub_token")


def script_as_run(name):
    """The script `name` as the command named it (`python ../run_ner.py` keeps its folder, so the card's command
    runs again from where it ran), or `name` where it did not run as that script (main() called elsewhere)."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if os.path.basename(typed) == name else name


def command_line(argv=None):
    """The command that ran, with the values of token flags replaced."""
    argv = list(sys.argv if argv is None else argv)
    shown = []
    for position, arg in enumerate(argv):
        if position and argv[position - 1] in SECRET_FLAGS:
            arg = "<redacted>"
        elif "=" in arg and arg.split("=", 1)[0] in SECRET_FLAGS:
            arg = arg.split("=", 1)[0] + "=<redacted>"
        shown.append(arg)
    return "python " + " ".join(shlex.quote(arg) for arg in shown)


def word_types(tags):
    """{tag: its type}: B-PER's PER; the bare B and I of spans without types (nerkit.schemes.label_parts) `_`,
    as seqeval names that type; a tag without an entity prefix (O, a POS tag such as -LRB-) as it is."""
    tags = sorted(tags)
    return {tag: kind or "_" if prefix else kind for tag, (prefix, kind) in zip(tags, label_parts(tags))}


@dataclass
class CardFacts:
    """How a model was made, for its card: `hyperparameters` as upstream's card lists them (name: value)."""

    base_model: str
    data_sources: dict
    label_list: list
    command: str
    hyperparameters: dict = field(default_factory=dict)
    hub_dataset: tuple | None = None  # (name, config or None) of a --dataset_name from the hub


@dataclass
class CardScores:
    """The validation labels a card scores: gold and predicted per example, read in `metric_mode` and (strict
    mode) the tagging `scheme`."""

    gold: list
    predicted: list
    metric_mode: str = "default"
    scheme: str | None = None


@dataclass(frozen=True)
class Loading:
    """How the saved folder loads elsewhere: the tokenizer class AutoTokenizer would rebuild without the
    space training put before each word (nerkit.tokenization), if any, and whether the model comes with code
    of its own (config.json's auto_map), which loads only when allowed."""

    rebuilt_as: str | None = None
    remote_code: bool = False


def model_card(facts, scores=None, name="model", loading=Loading()):
    """README.md text: metadata (`name` is the model-index's), base model, data, labels, the exact command,
    the training hyperparameters, and with `scores` (CardScores) the scores per entity type, or per tag for
    tags that name no entities; last how to use it (`loading`: `pipeline_lines`)."""
    base_model, label_list = facts.base_model, facts.label_list
    evaluation = card_evaluation(scores, label_list) if scores is not None else None
    overall = overall_scores(*evaluation) if evaluation else {}
    lines = [
        "---",
        yaml_text(card_metadata(facts, overall, name)).rstrip("\n"),
        "---",
        "",
        "# Token classification model",
        "",
        f"Fine-tuned from `{base_model}` with nerkit's `run_ner` scripts.",
        "",
        "## Data",
        "",
        *[f"- {split}: `{source}`" for split, source in facts.data_sources.items()],
        "",
        f"## Labels ({len(label_list)})",
        "",
        ", ".join(code_span(label) for label in label_list),
        "",
        "## Command",
        "",
        "```bash",
        facts.command,
        "```",
        "",
    ]
    processes = (facts.hyperparameters or {}).get("num_devices")
    if processes:
        lines += [f"Trained as {processes} processes ({facts.hyperparameters['distributed_type']}): launch the command "
                  f"with as many, `torchrun --nproc_per_node {processes}` (or `accelerate launch --multi_gpu "
                  f"--num_processes {processes}`, which on CPUs needs --multi_gpu) in place of `python`, for the same "
                  "training.", ""]
    if facts.hyperparameters:
        lines += ["## Training hyperparameters", "",
                  *[f"- {name}: {value}" for name, value in facts.hyperparameters.items() if value is not None], ""]
    if evaluation:
        lines += scores_section(scores, label_list, *evaluation)
    lines += ["## Framework versions", "", *[f"- {name} {version}" for name, version in framework_versions()], ""]
    trust = " --trust_remote_code" if loading.remote_code else ""
    lines += ["## Use", "", "```python", *pipeline_lines(loading), "```", "",
              f"or `python predict_ner.py --model PATH_TO_THIS_FOLDER{trust} --input texts.txt`.", ""]
    return "\n".join(lines)


def code_span(text):
    """`text` as Markdown code, which may hold backticks itself (the POS tags `` and ''): fenced by a longer run
    of them, with spaces inside where it starts or ends with one."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def pipeline_lines(loading):
    """Python that tags text with the saved folder (a Loading): with the tokenizer loaded as saved where
    AutoTokenizer would rebuild it without the space training put before each word, and allowing the
    model's own code where it has some."""
    trust = ", trust_remote_code=True" if loading.remote_code else ""
    if loading.rebuilt_as is None:
        return ["from transformers import pipeline",
                f'tagger = pipeline("token-classification", model="PATH_TO_THIS_FOLDER", aggregation_strategy="first"'
                f'{trust})']
    return ["from transformers import PreTrainedTokenizerFast, pipeline",
            f"# not AutoTokenizer: it would rebuild the tokenizer as {loading.rebuilt_as}, without the space put "
            "before each",
            "# word in training",
            'tokenizer = PreTrainedTokenizerFast.from_pretrained("PATH_TO_THIS_FOLDER")',
            'tagger = pipeline("token-classification", model="PATH_TO_THIS_FOLDER", tokenizer=tokenizer,',
            f'                  aggregation_strategy="first"{trust})']


def launch_settings(num_processes, distributed_type, eval_batch_size):
    """What upstream's card adds to the hyperparameters for a run of several processes: how they were
    distributed, how many, and the evaluation batch over all of them; nothing for one process.
    `distributed_type` is accelerate's (MULTI_GPU, MULTI_CPU, ...)."""
    if num_processes <= 1:
        return {}
    kind = str(getattr(distributed_type, "value", distributed_type))
    return {"distributed_type": {"MULTI_GPU": "multi-GPU", "MULTI_CPU": "multi-CPU"}.get(kind, kind),
            "num_devices": num_processes, "total_eval_batch_size": eval_batch_size * num_processes}


def card_metadata(facts, overall, name):
    """The card's YAML metadata as the hub reads it, upstream's fields: base_model for a hub id, the hub
    dataset, and a model-index whose result (task, dataset, validation scores) is given only with a hub
    dataset, as upstream gives it (the hub requires a dataset id). `overall` are the validation scores
    (`overall_scores`)."""
    names_entities = any(prefix for prefix, _ in label_parts(facts.label_list))  # not POS tags or chunks alone
    metadata = {"library_name": "transformers", "pipeline_tag": "token-classification",
                "tags": ["token-classification"] + (["ner"] if names_entities else [])}
    if is_hub_id(facts.base_model):
        metadata["base_model"] = facts.base_model
    if facts.hub_dataset:
        metadata["datasets"] = [facts.hub_dataset[0]]
    if overall:
        metadata["metrics"] = list(overall)
    result = []
    if facts.hub_dataset and overall:
        dataset_name, config = facts.hub_dataset
        dataset = {"name": f"{dataset_name} {config}" if config else dataset_name, "type": dataset_name,
                   **({"config": config, "args": config} if config else {}), "split": "validation"}
        result = [{"task": {"name": "Token Classification", "type": "token-classification"}, "dataset": dataset,
                   "metrics": [{"name": metric.capitalize(), "type": metric, "value": round(value, 4)}
                               for metric, value in overall.items()]}]
    metadata["model-index"] = [{"name": name, "results": result}]
    return metadata


def yaml_text(value):
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def card_evaluation(scores, label_list):
    """The validation scores, computed once for the card's metadata and its tables: (True, the word-by-word
    analysis) for tags that name no entities, else (False, seqeval's entity-level scores in the run's mode)."""
    if labels_without_entities(label_list, scores.scheme):
        return True, analyse_tag_errors(None, scores.gold, scores.predicted, shown=0)
    return False, entity_scores(scores.gold, scores.predicted, label_list, scores.metric_mode, entity_level=True,
                                scheme=scores.scheme)


def overall_scores(plain_tags, found):
    """{precision, recall, f1, accuracy} over all entities of a `card_evaluation`, or {accuracy} word by
    word for tags that name no entities (none without words)."""
    if plain_tags:
        return {"accuracy": found["accuracy"]} if found["words"] else {}
    return {metric: float(found[metric]) for metric in ("precision", "recall", "f1", "accuracy")}


def is_hub_id(name):
    """Whether `name` is spelled as a hub id (owner/name, by the hub's own rules: never ./x, ../x or /x) and is
    no local path: the card's base_model and datasets metadata."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.exists(name)


FRAMEWORKS = ("transformers", "torch", "datasets", "tokenizers", "accelerate", "seqeval")


def framework_versions():
    """(package, version) of what trained and scored the model, as upstream's card lists them."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in FRAMEWORKS:
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return found


def scores_section(scores, label_list, plain_tags, found):
    """The card's evaluation (`card_evaluation`): per entity type (seqeval, in the run's mode), or per tag for
    tags that name no entities, then the error categories."""
    gold, predicted, mode, scheme = scores.gold, scores.predicted, scores.metric_mode, scores.scheme
    if plain_tags:
        return tag_scores_section(found)
    types = sorted({key.rsplit("_", 1)[0] for key in found if key.endswith("_number")})
    return [
        f"## Evaluation (validation, seqeval {mode} mode, per word)",
        "",
        "| entity type | precision | recall | F1 | gold entities |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {kind} | {found[f'{kind}_precision']:.4f} | {found[f'{kind}_recall']:.4f} | "
          f"{found[f'{kind}_f1']:.4f} | {found[f'{kind}_number']} |" for kind in types],
        f"| **overall** | {found['precision']:.4f} | {found['recall']:.4f} | {found['f1']:.4f} | "
        f"{sum(found[f'{kind}_number'] for kind in types)} |",
        "",
        f"Word accuracy: {found['accuracy']:.4f}.",
        "",
        *card_section(analyse_errors(None, gold, predicted, label_list, mode, shown=0, scheme=scheme), "validation"),
    ]


def tag_scores_section(analysis):
    """The model card's evaluation for tags that name no entities (`analyse_tag_errors`): precision, recall
    and F1 per tag, word by word, and the word-by-word error table."""
    rows = []
    for tag, tally in analysis["per_tag"].items():
        if not tally["gold"]:
            continue
        precision = tally["correct"] / tally["predicted"] if tally["predicted"] else 0.0
        recall = tally["correct"] / tally["gold"]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(f"| {tag} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {tally['gold']} |")
    return [
        "## Evaluation (validation, per word: the tags name no entities)",
        "",
        "| tag | precision | recall | F1 | words |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Word accuracy: {analysis['accuracy']:.4f}.",
        "",
        *tag_card_section(analysis, "validation"),
    ]


def write_model_card(output_dir, facts, scores=None):
    """README.md of a trained folder, after its tokenizer is saved: how to load that tokenizer depends on it."""
    name = os.path.basename(os.path.normpath(os.path.abspath(output_dir)))  # upstream's model-index name
    rebuilt_as = class_that_drops_the_space(output_dir)
    if rebuilt_as:
        logger.warning("AutoTokenizer loads the saved tokenizer of %s as %s, which rebuilds its pipeline without the "
                       "space put before each word in training, so words would be tokenized otherwise. This suite's "
                       "scripts put it back; elsewhere load the tokenizer with PreTrainedTokenizerFast (README.md of "
                       "the folder shows how).", output_dir, rebuilt_as)
    remote_code = "auto_map" in (saved_config(output_dir) or {})
    card = model_card(facts, scores, name, Loading(rebuilt_as, remote_code))
    write_atomic(os.path.join(output_dir, "README.md"), card)


def pyplot():
    """matplotlib's pyplot on a file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_counts(gold, predicted):
    """{(gold type, predicted type): words} over every word, 'O' included."""
    types = word_types({tag for tags in (*gold, *predicted) for tag in tags})
    counts = Counter()
    for gold_tags, predicted_tags in zip(gold, predicted):
        counts.update((types[g], types[p]) for g, p in zip(gold_tags, predicted_tags))
    return counts


def save_confusion_matrix(output_dir, gold, predicted):
    """confusion_matrix.png: words by gold entity type (rows) and predicted type (columns)."""
    plt = pyplot()
    if plt is None:
        return None
    counts = confusion_counts(gold, predicted)
    types = sorted({kind for pair in counts for kind in pair}, key=lambda kind: (kind == "O", kind))
    matrix = [[counts[(g, p)] for p in types] for g in types]
    figure, axes = plt.subplots(figsize=(1.0 + 0.6 * len(types), 1.0 + 0.5 * len(types)))
    rows = [[value / max(sum(row), 1) for value in row] for row in matrix]
    axes.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                      color="white" if rows[i][j] > 0.5 else "black")
    axes.set_xticks(range(len(types)), types, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(types)), types, fontsize=8)
    axes.set_xlabel("predicted type")
    axes.set_ylabel("gold type")
    axes.set_title("Words by entity type (row-normalised colour)")
    return _save(figure, plt, os.path.join(output_dir, "confusion_matrix.png"))


def save_test_predictions(output_dir, split, tags, probabilities, metrics, label_list, metric_mode, scheme=None):
    """What predicting the test split leaves, the same in both scripts: for a labelled split its scores as a
    table in the log; predict_results.json (`metrics`, merged into all_results.json); predictions.txt and
    predictions.jsonl; for a labelled split its error analysis."""
    if "predict_f1" in metrics:
        logger.info("Test scores:\n%s", score_table(metrics, "predict"))
    # the predictions and their results are one run's, or the earlier run's, never a mix
    write_together(prediction_files(output_dir, split, tags, probabilities) | result_files(output_dir, "predict",
                                                                                            metrics))
    if split.tags is not None:
        save_error_analysis(output_dir, split, tags, label_list, metric_mode, scheme)


def save_error_analysis(output_dir, split, predicted, label_list, metric_mode, scheme=None):
    """errors_<split>.json for a labelled split, its summary in the log, and its picture: errors.png for
    validation (beside confusion_matrix.png, which is validation's too), errors_<split>.png for another
    split. Returns the analysis."""
    by_word = labels_without_entities(label_list, scheme)
    if by_word:
        analysis = analyse_tag_errors(split.tokens, split.tags, predicted, split.where_word)
    else:
        analysis = analyse_errors(split.tokens, split.tags, predicted, label_list, metric_mode, split.where_word,
                                  scheme=scheme)
    path = os.path.join(output_dir, f"errors_{split.name}.json")
    write_json(path, dict(analysis, split=split.name, source=split.source))
    for line in (tag_summary_lines if by_word else summary_lines)(analysis, split.name):
        logger.info(line)
    shown = (f"{SHOWN_PER_CONFUSION} examples of each of the {SHOWN_EXAMPLES} most frequent confusions" if by_word
             else f"{SHOWN_EXAMPLES} examples of each category")
    logger.info("Wrote %s (with up to %s).", path, shown)
    picture = "errors.png" if split.name == "validation" else f"errors_{split.name}.png"
    (save_tag_error_chart if by_word else save_error_chart)(os.path.join(output_dir, picture), analysis, split.name)
    return analysis


def save_error_chart(path, analysis, split_name):
    """A bar per entity type: its gold entities by category, then its spurious predictions."""
    plt = pyplot()
    if plt is None or not analysis["per_type"]:
        return None
    types = list(analysis["per_type"])
    colours = {"correct": "tab:green", "wrong_type": "tab:purple", "wrong_boundary": "tab:orange",
               "wrong_boundary_and_type": "tab:brown", "missed": "tab:red", "spurious": "tab:gray"}
    figure, axes = plt.subplots(figsize=(9, 1.5 + 0.45 * len(types)))
    left = [0] * len(types)
    for name in CATEGORIES:
        values = [analysis["per_type"][kind]["counts"][name] for kind in types]
        axes.barh(types, values, left=left, color=colours[name], label=TITLES[name])
        left = [start + value for start, value in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("entities (gold by category; spurious: predictions)")
    counts = analysis["counts"]
    axes.set_title(f"Errors on {split_name}: {counts['correct']} of {analysis['gold_entities']} gold entities "
                   f"correct, {counts['spurious']} spurious", fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _save(figure, plt, path)


def save_tag_error_chart(path, analysis, split_name):
    """A bar per tag: its words tagged right and wrong, then the other words given that tag."""
    plt = pyplot()
    tags = [tag for tag, tally in analysis["per_tag"].items() if tally["gold"] or tally["predicted"]]
    if plt is None or not tags:
        return None
    tallies = [analysis["per_tag"][tag] for tag in tags]
    parts = [("correct", [t["correct"] for t in tallies], "tab:green"),
             ("wrong", [t["gold"] - t["correct"] for t in tallies], "tab:red"),
             ("given to other words", [t["predicted"] - t["correct"] for t in tallies], "tab:gray")]
    figure, axes = plt.subplots(figsize=(9, 1.5 + 0.3 * len(tags)))
    left = [0] * len(tags)
    for label, values, colour in parts:
        axes.barh(tags, values, left=left, color=colour, label=label)
        left = [start + value for start, value in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("words (gold tag: correct, wrong; then words wrongly given the tag)")
    axes.set_title(f"Errors on {split_name}: {analysis['correct']:,} of {analysis['words']:,} words correct "
                   f"({analysis['accuracy']:.2%})", fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _save(figure, plt, path)


def save_learning_curves(output_dir, history):
    """learning_curves.png from [{"step", "loss"?, "eval_loss"?, "eval_f1"?}] entries."""
    if not history:  # before matplotlib's import, which takes about 0.3 s
        logger.info("No learning_curves.png: the run logged no loss and no evaluation (each comes every "
                    "--logging_steps / --eval_strategy; a run shorter than --logging_steps logs none).")
        return None
    plt = pyplot()
    if plt is None:
        return None
    figure, loss_axes = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        points = [(entry["step"], entry[key]) for entry in history if entry.get(key) is not None]
        if points:
            loss_axes.plot(*zip(*points), marker="o", markersize=3, label=label)
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("loss")
    f1_points = [(entry["step"], entry["eval_f1"]) for entry in history if entry.get("eval_f1") is not None]
    if f1_points:
        f1_axes = loss_axes.twinx()
        f1_axes.plot(*zip(*f1_points), color="tab:green", marker="s", markersize=4, label="validation F1")
        f1_axes.set_ylabel("entity F1")
        f1_axes.set_ylim(0, 1)
        f1_axes.legend(loc="upper right")
    loss_axes.legend(loc="upper left")
    loss_axes.set_title("Learning curves")
    return _save(figure, plt, os.path.join(output_dir, "learning_curves.png"))


def _save(figure, plt, path):
    """Write the figure whole or not at all. matplotlib's warnings (a label's characters missing from its
    font, a layout too tight for a long label) become one line of the log instead of raw warnings."""
    temporary = temporary_beside(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            figure.tight_layout()
            figure.savefig(temporary, dpi=110, format="png")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.remove(temporary)
    missing = sorted({int(match.group(1)) for warning in caught
                      for match in [MISSING_GLYPH.search(str(warning.message))] if match})
    if missing:
        logger.info("Wrote %s; the font matplotlib uses lacks %s, drawn as boxes (install a font that has them, "
                    "such as Noto Sans CJK, to see them).", path, ", ".join(chr(code) for code in missing[:10]))
    else:
        logger.info("Wrote %s", path)
    return path


MISSING_GLYPH = re.compile(r"Glyph (\d+)")  # "Glyph 20154 (\N{...}) missing from font(s) DejaVu Sans."


def hub_dataset(data_args):
    """(name, config or None) of a --dataset_name that names a hub dataset, not a local folder; else None."""
    name = data_args.dataset_name
    if not name or not is_hub_id(name):
        return None
    return name, data_args.dataset_config_name


def data_sources(data_args):
    """{split: where it came from} for the model card."""
    if data_args.dataset_name:
        name = data_args.dataset_name + (f" ({data_args.dataset_config_name})" if data_args.dataset_config_name else "")
        return {"dataset": name}
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    return {split: path for split, path in files.items() if path}
