"""run_ner_no_trainer.py: parity with run_ner.py, accumulation, resume, launchers."""

import glob
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import run_ner_no_trainer
from conftest import ROOT, examples
from test_run_ner import predictions, read_json, run, write_rows

LOOP = ["--learning_rate", "5e-3", "--seed", "7", "--per_device_train_batch_size", "8"]


def run_loop(model, output_dir, *flags, files=None):
    argv = ["--model_name_or_path", model, "--output_dir", str(output_dir), *LOOP, *flags]
    for split, path in (files or {}).items():
        argv += [f"--{split}_file", path]
    run_ner_no_trainer.cli(argv)
    return output_dir


def script(*argv, launcher=None):
    command = (launcher or [sys.executable]) + [os.path.join(ROOT, "run_ner_no_trainer.py"), *argv]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


def steps_done(output_dir):
    """Optimizer steps of the newest epoch checkpoint."""
    newest = max(glob.glob(os.path.join(output_dir, "epoch_*")), key=lambda p: int(p.rsplit("_", 1)[1]))
    return read_json(os.path.join(newest, "loop_state.json"))["completed_steps"]


@pytest.fixture(scope="module")
def files(ner_files):
    return {"train": ner_files["train"], "validation": ner_files["validation"], "test": ner_files["labelled_test"]}


def test_parity_with_run_ner(tiny_bert, files, tmp_path):
    trainer_dir = run(tiny_bert, tmp_path / "trainer", "--do_train", "--do_eval", "--do_predict",
                      "--num_train_epochs", "6", "--max_seq_length", "64", "--return_entity_level_metrics", files=files)
    loop_dir = run_loop(tiny_bert, tmp_path / "loop", "--num_train_epochs", "6", "--max_length", "64",
                        "--keep_last", "--return_entity_level_metrics", files=files)
    shared = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "train_results.json",
              "eval_results.json", "predict_results.json", "all_results.json", "predictions.txt",
              "predictions.jsonl"}
    assert shared <= set(os.listdir(trainer_dir)) and shared <= set(os.listdir(loop_dir))
    assert read_json(trainer_dir / "config.json")["id2label"] == read_json(loop_dir / "config.json")["id2label"]
    for name in ("eval_results.json", "predict_results.json"):
        trainer_results, loop_results = read_json(trainer_dir / name), read_json(loop_dir / name)
        assert set(trainer_results) == set(loop_results), name
    trainer_eval, loop_eval = read_json(trainer_dir / "eval_results.json"), read_json(loop_dir / "eval_results.json")
    assert trainer_eval["eval_f1"] > 0.8 and loop_eval["eval_f1"] > 0.8
    assert loop_eval["eval_f1"] == pytest.approx(trainer_eval["eval_f1"], abs=0.1)
    assert [len(line) for line in predictions(trainer_dir)] == [len(line) for line in predictions(loop_dir)]


def test_gradient_accumulation_follows_the_larger_batch(tiny_bert, files, tmp_path):
    common = ["--num_train_epochs", "2", "--checkpointing_steps", "epoch", "--learning_rate", "1e-3"]
    single = run_loop(tiny_bert, tmp_path / "single", *common, "--per_device_train_batch_size", "8", files=files)
    accumulated = run_loop(tiny_bert, tmp_path / "accumulated", *common, "--per_device_train_batch_size", "4",
                           "--gradient_accumulation_steps", "2", files=files)
    assert steps_done(single) == steps_done(accumulated) == 10  # 40 examples / 8 per step x 2 epochs
    single_loss = read_json(single / "train_results.json")["train_loss"]
    accumulated_loss = read_json(accumulated / "train_results.json")["train_loss"]
    assert accumulated_loss == pytest.approx(single_loss, rel=0.05)


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_bert, files, tmp_path):
    common = ["--num_train_epochs", "3", "--checkpointing_steps", "4"]
    whole = run_loop(tiny_bert, tmp_path / "whole", *common, files=files)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "step_4", resumed / "step_4")  # the state of a run stopped mid-epoch 1 of 3
    run_loop(tiny_bert, resumed, *common, "--resume_from_checkpoint", "latest", files=files)
    assert read_json(resumed / "eval_results.json")["eval_f1"] == read_json(whole / "eval_results.json")["eval_f1"]
    assert predictions(resumed) == predictions(whole)
    weights, resumed_weights = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all((weights[name] - resumed_weights[name]).abs().max() < 1e-5 for name in weights)


def test_non_empty_output_dir_needs_resume_or_overwrite(tiny_bert, files, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = script("--model_name_or_path", tiny_bert, "--train_file", files["train"], "--output_dir", str(tmp_path))
    assert result.returncode == 2 and "--overwrite_output_dir" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == ["old.txt"]


def test_help_lists_the_upstream_flags():
    result = script("--help")
    assert result.returncode == 0
    for flag in ("--max_length", "--per_device_train_batch_size", "--gradient_accumulation_steps",
                 "--lr_scheduler_type", "--num_warmup_steps", "--checkpointing_steps", "--resume_from_checkpoint",
                 "--with_tracking", "--report_to", "--hub_token", "--model_type", "--debug", "--test_file",
                 "--label_all_tokens", "--keep_last"):
        assert flag in result.stdout, flag


def test_debug_with_csv_input_and_tracking(tiny_bert, tmp_path):
    csv_files = {"train": write_rows(tmp_path / "train.csv", examples(120)),
                 "validation": write_rows(tmp_path / "dev.csv", examples(5))}
    output = run_loop(tiny_bert, tmp_path / "o", "--debug", "--num_train_epochs", "1", "--with_tracking",
                      "--report_to", "tensorboard", files=csv_files)
    assert read_json(output / "train_results.json")["train_samples"] == 100  # --debug keeps 100 per split
    assert glob.glob(str(output / "**" / "*tfevents*"), recursive=True)


def test_accelerate_launch_on_cpu(tiny_bert, files, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = script("--model_name_or_path", tiny_bert, "--train_file", files["train"], "--test_file",
                    files["test"], "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "1", *LOOP,
                    launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [len(line) for line in predictions(tmp_path / "o")] == [len(t) for t, _ in examples(5, offset=2)]
