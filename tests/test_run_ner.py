"""End-to-end runs of run_ner.py on tiny random checkpoints: files, keys, formats, labels, errors."""

import csv
import json
import logging
import re
import os
import subprocess
import sys

import pytest

import run_ner
from conftest import ROOT, examples, write_jsonl
from tiny_models import build_tiny_bert, build_tiny_gpt2

COMMON = ["--report_to", "none", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3",
          "--save_strategy", "no", "--seed", "7"]


def run(model, output_dir, *flags, files=None):
    argv = ["--model_name_or_path", model, "--output_dir", str(output_dir), *COMMON, *flags]
    for split, path in (files or {}).items():
        argv += [f"--{split}_file", path]
    run_ner.cli(argv)
    return output_dir


def run_script(*argv, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_ner.py"), *argv], capture_output=True,
                          text=True, env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})), cwd=ROOT)


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def predictions(output_dir):
    with open(os.path.join(output_dir, "predictions.txt"), encoding="utf-8") as handle:
        return [line.rstrip("\n").split(" ") for line in handle]


@pytest.fixture(scope="module")
def trained(tiny_bert, ner_files, tmp_path_factory):
    """One train + eval + predict run shared by the checks on its outputs."""
    output_dir = tmp_path_factory.mktemp("trained")
    files = {"train": ner_files["train"], "validation": ner_files["validation"], "test": ner_files["test"]}
    return run(tiny_bert, output_dir, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "3",
               "--return_entity_level_metrics", files=files)


def test_outputs_of_a_full_run(trained, ner_files):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_results.json", "eval_results.json",
                 "predict_results.json", "all_results.json", "trainer_state.json", "predictions.txt", "README.md"):
        assert os.path.isfile(os.path.join(trained, name)), name
    results = read_json(os.path.join(trained, "all_results.json"))
    for key in ("eval_precision", "eval_recall", "eval_f1", "eval_accuracy", "eval_overall_f1", "eval_PER_f1",
                "eval_LOC_number", "train_loss", "predict_samples"):
        assert key in results, key
    gold_per = sum(tag == "B-PER" for _, tags in examples(5, offset=1) for tag in tags)
    assert results["eval_PER_number"] == gold_per  # every gold PER entity of validation.json is counted


def test_config_holds_the_real_label_names(trained):
    config = read_json(os.path.join(trained, "config.json"))
    assert sorted(config["id2label"].values()) == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER",
                                                    "O"]


def test_predictions_have_one_label_per_word_for_an_unlabelled_test_file(trained):
    words = [tokens for tokens, _ in examples(5, offset=2)]
    assert [len(line) for line in predictions(trained)] == [len(w) for w in words]


def test_a_model_whose_tokenizer_has_no_padding_token_trains_and_predicts(ner_files, tmp_path):
    """GPT-2's tokenizer has no padding token: batches are padded with its end-of-text token, every word
    of the test file is predicted, and the saved tokenizer keeps the padding token for later use."""
    from transformers import AutoTokenizer

    output_dir = trains_and_predicts_every_word(build_tiny_gpt2(tmp_path / "gpt2"), ner_files, tmp_path)
    saved = AutoTokenizer.from_pretrained(output_dir)
    assert saved.pad_token == saved.eos_token == "<|endoftext|>"


def test_output_folder_loads_in_a_pipeline_with_real_entity_types(trained):
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(trained))
    found = tagger("John Smith works at Acme Corporation in New York .")
    assert found and all(item["entity"] in {"B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"}
                         for item in found)


def test_same_data_in_json_jsonl_and_csv_gives_the_same_scores(tiny_bert, tmp_path):
    rows, held_out = examples(20), examples(5, offset=1)
    scores = []
    for kind in ("json", "jsonl", "csv"):
        folder = tmp_path / kind
        folder.mkdir()
        files = {"train": write_rows(folder / f"train.{kind}", rows),
                 "validation": write_rows(folder / f"validation.{kind}", held_out)}
        output = run(tiny_bert, folder / "out", "--do_train", "--do_eval", "--num_train_epochs", "1", files=files)
        result = read_json(os.path.join(output, "eval_results.json"))
        scores.append({k: v for k, v in result.items() if "runtime" not in k and "per_second" not in k})
    assert scores[0] == scores[1] == scores[2]


def write_rows(path, rows):
    if str(path).endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["tokens", "ner_tags"])
            writer.writerows([json.dumps(tokens), json.dumps(tags)] for tokens, tags in rows)
        return str(path)
    return write_jsonl(path, rows)


def test_json_configuration_file(tiny_bert, ner_files, tmp_path):
    config = {"model_name_or_path": tiny_bert, "train_file": ner_files["train"], "output_dir": str(tmp_path / "o"),
              "do_train": True, "num_train_epochs": 1, "report_to": "none", "save_strategy": "no"}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    run_ner.cli([str(path)])
    assert os.path.isfile(tmp_path / "o" / "train_results.json")


def test_roberta_byte_level_tokenizer(tiny_roberta, ner_files, tmp_path):
    files = {"train": ner_files["train"], "test": ner_files["labelled_test"]}
    output = run(tiny_roberta, tmp_path, "--do_train", "--do_predict", "--num_train_epochs", "1", files=files)
    assert "predict_f1" in read_json(os.path.join(output, "predict_results.json"))
    assert [len(line) for line in predictions(output)] == [len(t) for t, _ in examples(5, offset=2)]


def test_label_seen_only_in_validation_does_not_crash(tiny_bert, tmp_path):
    rare = [(["Zorro", "rides"], ["B-HERO", "O"])]
    files = {"train": write_jsonl(tmp_path / "train.json", examples(10)),
             "validation": write_jsonl(tmp_path / "dev.json", examples(3) + rare)}
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--do_eval", "--num_train_epochs", "1", files=files)
    assert "B-HERO" in read_json(os.path.join(output, "config.json"))["label2id"]


def test_the_label_list_covers_the_whole_split_when_max_samples_keeps_fewer(tiny_bert, tmp_path):
    files = {"train": write_jsonl(tmp_path / "train.json", examples(10))}  # B-MISC first in example 2
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--num_train_epochs", "1", "--max_train_samples", "2",
                 files=files)
    assert "B-MISC" in read_json(os.path.join(output, "config.json"))["label2id"]  # as upstream's list


def test_label_all_tokens_scores_per_word(tiny_bert, ner_files, tmp_path):
    files = {"train": ner_files["train"], "validation": ner_files["validation"], "test": ner_files["labelled_test"]}
    output = run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1",
                 "--label_all_tokens", "--return_entity_level_metrics", files=files)
    # entity counts are those of the gold words, not of sub-tokens
    gold_loc = sum(tag == "B-LOC" for _, tags in examples(5, offset=2) for tag in tags)
    assert read_json(os.path.join(output, "predict_results.json"))["predict_LOC_number"] == gold_loc
    assert [len(line) for line in predictions(output)] == [len(t) for t, _ in examples(5, offset=2)]


def test_documents_longer_than_the_window_keep_every_word(tiny_bert, tmp_path):
    long_doc = [(sum((t for t, _ in examples(8)), []), sum((g for _, g in examples(8)), []))]
    files = {"train": write_jsonl(tmp_path / "train.json", examples(10) + long_doc),
             "test": write_jsonl(tmp_path / "test.json", long_doc + examples(2))}
    output = run(tiny_bert, tmp_path / "o", "--do_train", "--do_predict", "--num_train_epochs", "1",
                 "--max_seq_length", "16", "--stride", "4", "--return_entity_level_metrics", files=files)
    assert [len(line) for line in predictions(output)] == [len(long_doc[0][0]), 10, 8]
    gold_per = sum(tag == "B-PER" for _, tags in long_doc + examples(2) for tag in tags)
    assert read_json(os.path.join(output, "predict_results.json"))["predict_PER_number"] == gold_per


def test_pretrained_head_with_the_same_labels_is_reused_in_its_order(ner_files, tmp_path):
    order = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC"]
    model = build_tiny_bert(tmp_path / "finetuned", labels=order)
    output = run(model, tmp_path / "o", "--do_train", "--do_eval", "--num_train_epochs", "1",
                 files={"train": ner_files["train"], "validation": ner_files["validation"]})
    id2label = read_json(os.path.join(output, "config.json"))["id2label"]
    assert [id2label[str(i)] for i in range(len(order))] == order


def test_pretrained_head_with_other_labels_needs_the_flag(ner_files, tmp_path):
    model = build_tiny_bert(tmp_path / "finetuned", labels=["O", "B-PER", "I-PER", "B-X", "I-X", "B-Y", "I-Y", "Z"])
    result = run_script("--model_name_or_path", model, "--train_file", ner_files["train"], "--do_train",
                        "--output_dir", str(tmp_path / "o"), "--report_to", "none")
    assert result.returncode == 2 and "--ignore_mismatched_sizes" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()
    run(model, tmp_path / "o2", "--do_train", "--num_train_epochs", "1", "--ignore_mismatched_sizes",
        files={"train": ner_files["train"]})
    assert "B-LOC" in read_json(os.path.join(tmp_path / "o2", "config.json"))["label2id"]


def test_scoring_a_fine_tuned_model_on_data_with_a_tag_it_lacks(trained, tmp_path):
    """Without training, the model's head is kept: a gold tag it has no label for is scored as missed,
    never dropped, and --ignore_mismatched_sizes (a new head nobody would train) is refused."""
    rows = examples(5, offset=1)
    rows[0][1][-1] = "B-DATE"  # a one-word DATE entity on the last word (".")
    validation = write_jsonl(tmp_path / "validation.json", rows)
    output = run(str(trained), tmp_path / "o", "--do_eval", "--return_entity_level_metrics",
                 files={"validation": validation})
    results = read_json(os.path.join(output, "eval_results.json"))
    assert results["eval_DATE_number"] == 1 and results["eval_DATE_recall"] == 0.0
    # the same with the data given as a train file too: a run without --do_train still only scores
    output = run(str(trained), tmp_path / "o3", "--do_eval", "--return_entity_level_metrics",
                 files={"train": validation, "validation": validation})
    def without_timings(metrics):
        return {key: value for key, value in metrics.items() if not key.endswith(("_time", "_runtime", "_second"))}

    assert without_timings(read_json(os.path.join(output, "eval_results.json"))) == without_timings(results)
    result = run_script("--model_name_or_path", str(trained), "--validation_file", validation, "--do_eval",
                        "--ignore_mismatched_sizes", "--output_dir", str(tmp_path / "o2"), "--report_to", "none")
    assert result.returncode == 2 and "does not train it" in result.stderr and "Traceback" not in result.stderr


def test_prediction_loss_only_evaluates_the_loss_alone(trained, ner_files, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    output = run(str(trained), tmp_path / "o", "--do_eval", "--prediction_loss_only",
                 files={"validation": ner_files["validation"]})
    results = read_json(os.path.join(output, "eval_results.json"))
    assert "eval_loss" in results and "eval_f1" not in results
    assert not os.path.exists(os.path.join(output, "confusion_matrix.png"))
    assert "evaluation computes the loss alone" in caplog.text

def test_best_model_by_f1_and_early_stopping(tiny_bert, ner_files, tmp_path):
    output = run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--num_train_epochs", "4", "--eval_strategy",
                 "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "--metric_for_best_model", "f1",
                 "--early_stopping_patience", "1", "--early_stopping_threshold", "0.5",
                 files={"train": ner_files["train"], "validation": ner_files["validation"]})
    state = read_json(os.path.join(output, "trainer_state.json"))
    assert state["best_metric"] is not None and state["best_model_checkpoint"]
    assert len([log for log in state["log_history"] if "eval_f1" in log]) < 4  # stopped early


def test_tensorboard_logs_are_written_offline(tiny_bert, ner_files, tmp_path):
    run(tiny_bert, tmp_path, "--do_train", "--num_train_epochs", "1", "--report_to", "tensorboard",
        "--logging_steps", "1", files={"train": ner_files["train"]})
    event_files = [name for _, _, names in os.walk(tmp_path) for name in names if "tfevents" in name]
    assert event_files


def test_help_lists_upstream_and_added_flags():
    result = run_script("--help")
    assert result.returncode == 0
    for flag in ("--model_name_or_path", "--label_all_tokens", "--return_entity_level_metrics", "--max_seq_length",
                 "--do_train", "--push_to_hub", "--stride", "--metric_mode", "--label_list"):
        assert flag in result.stdout, flag
    help_text = " ".join(result.stdout.split())
    # a --no_X flag says it turns X off, not what X does when on, nor "(default: False)"
    assert "--no_packing, --no-packing Turn --packing off (see --packing). --auto_mixed_precision" in help_text


def test_the_loops_help_leaves_out_run_ner_spelling_of_its_window_flag():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_ner_no_trainer.py"), "--help"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "--max_length" in result.stdout and "--max_seq_length " not in result.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--do_eval"], "--do_eval needs a validation split"),
        (["--do_train", "--eval_strategy", "steps"], "--eval_strategy steps (or --do_eval) needs a validation split"),
        (["--do_train", "--early_stopping_patience", "2"], "--load_best_model_at_end"),
        (["--do_train", "--metric_for_best_model", "f2"], "not a score evaluation reports"),
        (["--do_train", "--max_seq_length", "2"], "--max_seq_length"),
    ],
)
def test_user_errors_exit_2_without_traceback_and_write_nothing(tiny_bert, ner_files, tmp_path, flags, message):
    output = tmp_path / "out"
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                        "--output_dir", str(output), "--report_to", "none", *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()


def test_non_empty_output_folder_is_not_overwritten(tiny_bert, ner_files, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", ner_files["train"], "--do_train",
                        "--output_dir", str(tmp_path), "--report_to", "none")
    assert result.returncode == 2 and "--overwrite_output_dir" in result.stderr
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_training_data_with_one_tag_only_is_warned_about(tiny_bert, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rows = [(words, ["O"] * len(words)) for words, _ in examples(8)]
    train = write_jsonl(tmp_path / "train.json", rows)
    run(tiny_bert, tmp_path / "out", "--do_train", "--max_steps", "1", files={"train": train})
    assert "Every tag in the data is O: the model can learn nothing but to predict it" in caplog.text


def test_eval_and_predict_metrics_are_printed_as_upstream_prints_them(trained, ner_files, tmp_path, capsys):
    run(str(trained), tmp_path / "o", "--do_eval", "--do_predict",
        files={"validation": ner_files["validation"], "test": ner_files["test"]})
    printed = capsys.readouterr().out
    assert "***** eval metrics *****" in printed and "***** predict metrics *****" in printed
    assert re.search(r"eval_f1\s+=", printed) and re.search(r"predict_samples\s+=\s+5", printed)


def test_remove_unused_columns_false_trains_evaluates_and_predicts(tiny_bert, ner_files, tmp_path):
    # the decoder's columns (word_ids, example_id) reach no collator: upstream fails there on word_ids
    output = run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--do_predict", "--max_steps", "2",
                 "--remove_unused_columns", "False", files={key: ner_files[key] for key in ("train", "validation", "test")})
    assert "eval_f1" in read_json(os.path.join(output, "eval_results.json"))
    assert len(predictions(output)) == 5


def first_logged_loss(output_dir):
    history = read_json(output_dir / "trainer_state.json")["log_history"]
    return next(entry["loss"] for entry in history if "loss" in entry)


def test_gradient_accumulation_does_not_scale_the_loss(tiny_bert, ner_files, tmp_path):
    # transformers 5 takes BERT's head (forward(**kwargs)) for one that divides by the batch's labelled tokens and
    # stops dividing by the accumulation steps: the loss trained on and logged came out twice as large here
    flags = ["--do_train", "--logging_steps", "1", "--max_steps", "1", "--learning_rate", "1e-9"]
    whole = run(tiny_bert, tmp_path / "whole", *flags, files={"train": ner_files["train"]})
    accumulated = run(tiny_bert, tmp_path / "accumulated", *flags, "--per_device_train_batch_size", "4",
                      "--gradient_accumulation_steps", "2", files={"train": ner_files["train"]})
    assert first_logged_loss(accumulated) == pytest.approx(first_logged_loss(whole), rel=0.1)


def test_a_loss_that_honours_num_items_in_batch_is_left_to_the_trainer(tiny_bert):
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.modeling import declare_mean_loss

    class Normalised(torch.nn.Module):  # divides a summed loss by the batch's labelled tokens, as the Trainer expects
        def __init__(self, model):
            super().__init__()
            self.model, self.dummy_inputs = model, model.dummy_inputs

        @property
        def device(self):
            return self.model.device

        def forward(self, labels=None, num_items_in_batch=None, **kwargs):
            output = self.model(**kwargs)
            output.loss = torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), labels.flatten(),
                                                            reduction="sum") / num_items_in_batch
            return output

    bert = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    assert declare_mean_loss(Normalised(bert)) is False
    assert declare_mean_loss(bert) is True and bert.accepts_loss_kwargs is False


def test_parameters_without_gradient_are_found_by_one_backward_of_the_dummy_batch(tiny_bert):
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.modeling import parameters_without_gradient

    bert = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    held = torch.ones_like(bert.classifier.bias)
    bert.classifier.bias.grad = held
    assert parameters_without_gradient(bert) == []
    assert bert.classifier.bias.grad is held and bert.classifier.weight.grad is None  # as they were
    bert.spare = torch.nn.Linear(2, 2)  # trainable, never called: DDP must look for it
    assert parameters_without_gradient(bert) == ["spare.weight", "spare.bias"]


def test_a_model_without_a_position_table_and_padding_on_the_left_trains_and_predicts(ner_files, tmp_path):
    """XLNet reports max_position_embeddings -1 and pads on the left: its windows are the tokenizer's
    maximum, and every word of the test file is predicted after its special tokens come last."""
    from tiny_models import build_tiny_xlnet

    trains_and_predicts_every_word(build_tiny_xlnet(tmp_path / "xlnet"), ner_files, tmp_path)


def trains_and_predicts_every_word(model, ner_files, tmp_path):
    """A few steps of training on `model`, scored and predicted: one label per word of the test file."""
    files = {split: ner_files[split] for split in ("train", "validation", "test")}
    output_dir = run(model, tmp_path / "out", "--do_train", "--do_eval", "--do_predict", "--max_steps", "3",
                     files=files)
    assert [len(line) for line in predictions(output_dir)] == [len(w) for w, _ in examples(5, offset=2)]
    assert "eval_f1" in read_json(os.path.join(output_dir, "all_results.json"))
    return output_dir


def test_a_tokenizer_that_autotokenizer_rebuilds_gets_a_model_card_that_loads_it_as_trained(ner_files, tmp_path,
                                                                                            caplog):
    """A Qwen2 tokenizer is given a space before each word (nerkit.tokenization.prepend_space) and saved with
    it, but transformers 5 rebuilds Qwen2Tokenizer from its vocabulary on every AutoTokenizer load, without
    the space. The card's pipeline loads the tokenizer as saved, which tokenizes as training did."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from nerkit.tokenization import load_fast_tokenizer
    from tiny_models import build_tiny_qwen2

    caplog.set_level(logging.INFO)
    output_dir = str(trains_and_predicts_every_word(build_tiny_qwen2(tmp_path / "qwen2"), ner_files, tmp_path))
    card = open(os.path.join(output_dir, "README.md"), encoding="utf-8").read()
    assert "tokenizer = PreTrainedTokenizerFast.from_pretrained" in card and "as Qwen2Tokenizer" in card
    assert "loads the saved tokenizer of" in caplog.text and "as Qwen2Tokenizer" in caplog.text

    words = ["Acme", "paid", "1,000", "dollars"]
    as_trained = load_fast_tokenizer(output_dir, {})(words, is_split_into_words=True).tokens()
    assert PreTrainedTokenizerFast.from_pretrained(output_dir)(words, is_split_into_words=True).tokens() == as_trained
    assert AutoTokenizer.from_pretrained(output_dir)(words, is_split_into_words=True).tokens() != as_trained
    code = card.split("```python\n")[-1].split("```")[0].replace("PATH_TO_THIS_FOLDER", output_dir)
    namespace = {}
    exec(code, namespace)  # the card's own lines
    assert namespace["tagger"].tokenizer(words, is_split_into_words=True).tokens() == as_trained
    assert namespace["tagger"]("Acme paid 1,000 dollars") is not None


def test_the_model_card_of_a_tokenizer_that_reloads_as_saved_uses_autotokenizer(trained):
    card = open(os.path.join(trained, "README.md"), encoding="utf-8").read()
    assert 'pipeline("token-classification", model="PATH_TO_THIS_FOLDER", aggregation_strategy="first")' in card
    assert "PreTrainedTokenizerFast" not in card
