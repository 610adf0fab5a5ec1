"""Bad inputs found only late before: each is refused before any weights load, with exit status 2, a
message naming the file or flag, no traceback and no output folder."""

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


@pytest.mark.parametrize("flags", [["--do_eval"], ["--eval_strategy", "epoch"]])  # the second implies --do_eval
def test_unlabelled_validation_is_refused_before_any_weights_load(tiny_bert, ner_files, unlabelled, tmp_path,
                                                                  no_weights, flags):
    message = refused(run_ner, ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"],
                                "--validation_file", unlabelled, "--do_train", *flags, "--output_dir",
                                str(tmp_path / "out"), "--report_to", "none"])
    assert f"{unlabelled}: the validation data has words but no tags, and --do_eval needs tags" in message
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
    source = tmp_path / "input.txt"
    source.write_text("Peter Blackburn\n", encoding="utf-8")
    with pytest.raises(UserError, match="--max_length 2 leaves no room"):
        predict_ner.main(predict_ner.parse_options(["--model", tiny_bert, "--input", str(source), "--output",
                                                    str(tmp_path / "out.jsonl"), "--max_length", "2"]))
    assert not (tmp_path / "out.jsonl").exists()
