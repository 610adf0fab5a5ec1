"""The trained folder explains itself: model card, confusion matrix, learning curves; Viterbi in training."""

import logging
import os

import pytest
import transformers

import run_ner
from conftest import invalid_inside_tags, lean_towards
from nerkit.report import command_line, confusion_counts
from test_run_ner import predictions, run


def test_command_line_hides_tokens():
    shown = command_line(["run_ner.py", "--token", "hf_abc", "--hub_token=hf_def", "--do_train"])
    assert "hf_abc" not in shown and "hf_def" not in shown and "--do_train" in shown


def test_the_card_names_the_script_as_the_command_did(monkeypatch):
    """`python ../run_ner.py ...` runs again from where it ran; main() called by another program names the script."""
    from nerkit.report import script_as_run

    monkeypatch.setattr("sys.argv", ["../tools/run_ner.py", "--do_train"])
    assert script_as_run("run_ner.py") == "../tools/run_ner.py"
    monkeypatch.setattr("sys.argv", ["/usr/bin/pytest", "-q"])
    assert script_as_run("run_ner.py") == "run_ner.py"


def test_confusion_counts_are_per_word_and_type():
    counts = confusion_counts([["B-PER", "I-PER", "O"]], [["B-PER", "B-LOC", "O"]])
    assert counts == {("PER", "PER"): 1, ("PER", "LOC"): 1, ("O", "O"): 1}
    # POS tags are their own type, hyphens included (Penn Treebank's brackets)
    assert confusion_counts([["-LRB-", "NN"]], [["-LRB-", "-RRB-"]]) == {("-LRB-", "-LRB-"): 1, ("NN", "-RRB-"): 1}


def test_model_card_and_pictures(tiny_bert, ner_files, tmp_path):
    output = run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--num_train_epochs", "2", "--eval_strategy",
                 "epoch", "--logging_steps", "2", files={"train": ner_files["train"],
                                                         "validation": ner_files["validation"]})
    with open(os.path.join(output, "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    for expected in (tiny_bert, ner_files["train"], "`B-PER`", "| PER |", "**overall**", "--num_train_epochs",
                     "## Framework versions", f"- transformers {transformers.__version__}",
                     "## Training hyperparameters", "- learning_rate: 0.005", "- train_batch_size: 8",
                     "- num_epochs: 2.0", "- optimizer: adamw_torch_fused with betas=(0.9,0.999) and epsilon=1e-08",
                     "- mixed_precision: "):
        assert expected in card, expected
    assert "label_smoothing_factor" not in card and "lr_scheduler_kwargs" not in card  # not given
    assert "base_model:" not in card  # a local folder is no hub id
    from huggingface_hub import ModelCard

    data = ModelCard(card).data  # upstream's model-index, named after the folder; local files give no result
    assert data.model_name == os.path.basename(output) and not data.eval_results
    for picture in ("confusion_matrix.png", "learning_curves.png"):
        with open(os.path.join(output, picture), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_card_lists_the_settings_that_changed_training(tmp_path):
    """As upstream's card: label smoothing when on, the optimizer with its settings, the scheduler's arguments."""
    from types import SimpleNamespace

    from transformers import TrainingArguments

    from run_ner import trainer_hyperparameters

    args = TrainingArguments(str(tmp_path), label_smoothing_factor=0.1, optim="sgd", optim_args="momentum=0.9",
                             lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": 1e-6},
                             use_cpu=True)
    listed = trainer_hyperparameters(args, SimpleNamespace(mixed_precision="no", distributed_type="NO"))
    assert listed["label_smoothing_factor"] == 0.1 and listed["optimizer"] == "sgd with optim_args=momentum=0.9"
    assert listed["lr_scheduler_kwargs"] == {"min_lr": 1e-6}
    adam = trainer_hyperparameters(TrainingArguments(str(tmp_path), adam_beta2=0.98, use_cpu=True),
                                   SimpleNamespace(mixed_precision="no", distributed_type="NO"))
    assert adam["optimizer"].endswith("with betas=(0.9,0.98) and epsilon=1e-08")
    assert "label_smoothing_factor" not in adam and "lr_scheduler_kwargs" not in adam


def test_the_card_names_a_hub_base_model_in_its_metadata():
    from huggingface_hub import ModelCard

    from nerkit.report import CardFacts, model_card

    card = model_card(CardFacts("microsoft/deberta-v3-base", {"train": "train.json"}, ["O", "B-PER"], "python run_ner.py"))
    assert ModelCard(card).data.base_model == "microsoft/deberta-v3-base"


@pytest.mark.parametrize("name, hub", [("microsoft/deberta-v3-base", True), ("bert-base-cased", True),
                                       ("./gone", False), ("../gone/model", False), ("/gone/model", False),
                                       ("~/gone", False), ("a/b/c", False)])
def test_only_a_hub_id_is_the_cards_base_model_even_when_the_folder_is_gone(name, hub):
    # a local folder removed by the time the card is written is still no hub id: ./x is never one
    from nerkit.report import is_hub_id

    assert is_hub_id(name) == hub


def test_the_card_gives_hub_data_scores_as_upstream_s_model_index():
    """With a hub dataset the metadata has upstream's model-index result, as the hub library reads it: the
    validation scores overall, figured here by hand (one of two entities found, none wrong)."""
    from huggingface_hub import ModelCard

    from nerkit.report import CardFacts, CardScores, model_card

    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    facts = CardFacts("bert-base-cased", {"dataset": "conll2003"}, labels, "python run_ner.py", {},
                      ("conll2003", "conll2003"))
    scores = CardScores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
    data = ModelCard(model_card(facts, scores, "bert-conll")).data
    assert data.model_name == "bert-conll" and data.datasets == ["conll2003"] and "ner" in data.tags
    found = {result.metric_type: result.metric_value for result in data.eval_results}
    assert found == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "accuracy": 0.75}
    for result in data.eval_results:
        assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
            "token-classification", "conll2003", "conll2003", "validation")
    # tags that name no entities are scored by word accuracy alone (seqeval's made-up entities would mislead)
    pos = CardScores([["NN", "VB", "DT"]], [["NN", "NN", "DT"]], scheme="none")
    data = ModelCard(model_card(CardFacts("bert-base-cased", {}, ["DT", "NN", "VB"], "", {}, ("pos", None)), pos)).data
    assert [(result.metric_type, result.metric_value) for result in data.eval_results] == [("accuracy", 0.6667)]
    assert data.tags == ["token-classification"]  # POS tags name no entities: not tagged "ner"


def test_labels_with_backticks_are_whole_code_spans_in_the_card():
    markdown_it = pytest.importorskip("markdown_it")  # comes with huggingface_hub (typer, rich)

    from nerkit.report import CardFacts, model_card

    card = model_card(CardFacts("bert-base-cased", {}, ["``", "''", "NN"], "", {}, None))
    labels = card.split("## Labels (3)\n\n")[1].split("\n")[0]
    rendered = markdown_it.MarkdownIt().renderInline(labels)
    assert rendered == "<code>``</code>, <code>''</code>, <code>NN</code>", rendered


@pytest.fixture(scope="module")
def trained_once(tiny_bert, ner_files, tmp_path_factory):
    return run(tiny_bert, tmp_path_factory.mktemp("trained"), "--do_train", "--num_train_epochs", "1",
               files={"train": ner_files["train"]})


@pytest.mark.parametrize("decoding", ["viterbi", "argmax"])
def test_viterbi_decoding_gives_valid_sequences_where_argmax_does_not(trained_once, ner_files, tmp_path,
                                                                      monkeypatch, decoding):
    # every sub-token leans to I-PER: argmax puts it at sentence starts and after O, which IOB2 forbids
    original = run_ner.load_model
    monkeypatch.setattr(run_ner, "load_model", lambda *args: lean_towards(original(*args), "I-PER"))
    lines = predictions(run(str(trained_once), tmp_path, "--do_predict", "--decoding", decoding,
                            files={"test": ner_files["test"]}))
    invalid = [invalid_inside_tags(line) for line in lines]
    if decoding == "viterbi":
        assert not any(invalid) and all("I-PER" in line for line in lines if len(line) > 1)
    else:
        assert all(invalid)


def test_characters_missing_from_the_font_are_one_log_line_not_warnings(tmp_path, caplog):
    import warnings

    from nerkit.report import save_confusion_matrix

    caplog.set_level(logging.INFO)
    gold, predicted = [["B-人名", "O", "B-" + "x" * 300]], [["B-人名", "O", "O"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        save_confusion_matrix(str(tmp_path), gold, predicted)
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert any("lacks 人, 名, drawn as boxes" in message for message in caplog.messages)
