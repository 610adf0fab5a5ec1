"""Bad inputs found only late before: each is refused before any weights load, with exit status 2, a
message naming the file or flag, no traceback and no output folder."""

import json
import shutil

import pytest

import run_ner
import run_ner_no_trainer
from conftest import examples, write_jsonl
from nerkit.errors import UserError
from test_run_ner import run_script


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any script loads model weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was refused")

    for module in (run_ner, run_ner_no_trainer):
        monkeypatch.setattr(module, "load_model", refuse)


def refused(script, argv):
    with pytest.raises(UserError) as error:
        script.cli(argv)
    return str(error.value)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("unlabelled") / "words.json", examples(5), labelled=False)


def test_training_file_without_tags_exits_2_naming_it(tiny_bert, ner_files, unlabelled, tmp_path):
    output = tmp_path / "out"
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", unlabelled, "--validation_file",
                        ner_files["validation"], "--do_train", "--do_eval", "--output_dir", str(output),
                        "--report_to", "none")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{unlabelled}: the train data has words but no tags" in result.stderr and "--do_train" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


@pytest.mark.parametrize("flags, named", [(["--do_eval"], "--do_eval"),  # the second implies --do_eval
                                          (["--eval_strategy", "epoch"], "--eval_strategy epoch (or --do_eval)")])
def test_unlabelled_validation_is_refused_before_any_weights_load(tiny_bert, ner_files, unlabelled, tmp_path,
                                                                  no_weights, flags, named):
    message = refused(run_ner, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                                "--validation_file", unlabelled, "--do_train", *flags, "--output_dir",
                                str(tmp_path / "out"), "--report_to", "none"])
    assert f"{unlabelled}: the validation data has words but no tags, and {named} needs tags" in message
    assert "'ner_tags'" in message and not (tmp_path / "out").exists()


def test_unlabelled_validation_is_refused_by_the_accelerate_loop(tiny_bert, ner_files, unlabelled, tmp_path,
                                                                 no_weights):
    message = refused(run_ner_no_trainer, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                                           "--validation_file", unlabelled, "--output_dir", str(tmp_path / "out")])
    assert f"{unlabelled}: the validation data has words but no tags" in message
    assert not (tmp_path / "out").exists()


def test_too_small_window_is_refused_before_any_weights_load(tiny_bert, ner_files, tmp_path, no_weights):
    message = refused(run_ner, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"], "--do_train",
                                "--max_seq_length", "2", "--output_dir", str(tmp_path / "a"), "--report_to", "none"])
    assert "--max_seq_length 2 leaves no room" in message
    message = refused(run_ner_no_trainer, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                                           "--max_length", "2", "--output_dir", str(tmp_path / "b")])
    assert "--max_length 2 leaves no room" in message
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_predict_ner_refuses_a_too_small_window_before_any_weights_load(tiny_bert, tmp_path, monkeypatch):
    import predict_ner
    from transformers import AutoModelForTokenClassification

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was refused")

    monkeypatch.setattr(AutoModelForTokenClassification, "from_pretrained", refuse)
    tagger = shutil.copytree(tiny_bert, tmp_path / "tagger")  # a fine-tuned model's config: architecture, labels
    config = json.loads((tagger / "config.json").read_text(encoding="utf-8"))
    config.update(architectures=["BertForTokenClassification"], id2label={"0": "O", "1": "B-PER", "2": "I-PER"},
                  label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    (tagger / "config.json").write_text(json.dumps(config), encoding="utf-8")
    source = tmp_path / "input.txt"
    source.write_text("Peter Blackburn\n", encoding="utf-8")
    with pytest.raises(UserError, match="--max_length 2 leaves no room"):
        predict_ner.main(predict_ner.parse_options(["--model", str(tagger), "--input", str(source), "--output",
                                                    str(tmp_path / "out.jsonl"), "--max_length", "2"]))
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("script", [run_ner, run_ner_no_trainer])
def test_an_unreadable_data_file_is_refused_naming_it_and_the_reason(script, tiny_bert, ner_files, tmp_path,
                                                                    monkeypatch, no_weights):
    """Root reads any file whatever its mode, so the OS's refusal is played by `open`."""
    import builtins

    real_open = builtins.open

    def open_refusing_the_train_file(file, *args, **kwargs):
        if str(file) == ner_files["train"]:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_refusing_the_train_file)
    extra = ["--do_train", "--report_to", "none"] if script is run_ner else []
    message = refused(script, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                               "--output_dir", str(tmp_path / "out"), *extra])
    assert f"Cannot read the data file {ner_files['train']}: Permission denied" in message
    assert "chmod" in message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", [run_ner, run_ner_no_trainer])
@pytest.mark.parametrize("name, words", [("file", ["is a file", "--train_file"]),
                                         ("./no_such_folder", ["the folder ./no_such_folder does not exist"])])
def test_a_dataset_name_that_is_a_file_or_a_missing_folder_is_refused(script, tiny_bert, ner_files, tmp_path,
                                                                     no_weights, name, words):
    name = ner_files["train"] if name == "file" else name
    extra = ["--do_train", "--report_to", "none"] if script is run_ner else []
    message = refused(script, ["--model_name_or_path", tiny_bert, "--dataset_name", name, "--output_dir",
                               str(tmp_path / "out"), *extra])
    assert all(word in message for word in words), message
    assert not (tmp_path / "out").exists()


def test_digit_tags_in_a_conll_file_exit_2_asking_for_the_label_list(tiny_bert, tmp_path):
    """`John 1`: read as label names, the ids trained labels '0' to '4' and no entity (F1 0, silently)."""
    path = tmp_path / "train.conll"
    path.write_text("John\t1\nSmith\t2\nworks\t0\n\nParis\t3\n", encoding="utf-8")
    output = tmp_path / "out"
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", str(path), "--do_train",
                        "--output_dir", str(output), "--report_to", "none")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{path}, line 1: the tag '1' is a number" in result.stderr and "--label_list" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


def test_a_broken_parquet_file_gets_one_error_line(tiny_bert, tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"not parquet\n")
    result = run_script("--model_name_or_path", tiny_bert, "--train_file", str(path), "--do_train",
                        "--output_dir", str(tmp_path / "out"), "--report_to", "none")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if " - INFO - " not in line and line.strip()]
    assert lines == [line for line in lines if line.startswith("error: ")] and len(lines) == 1, lines
    assert f"{path}: not a readable Parquet file" in lines[0]
