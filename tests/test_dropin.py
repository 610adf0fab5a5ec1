"""A drop-in for the upstream scripts: upstream's own example tests pass (in-process and as commands), a
finished run is never redone by accident, and the log reads as lines a person can follow."""

import json
import logging
import os
import shutil
import re
import subprocess
import sys
from unittest.mock import patch

import pytest
import torch

import run_ner
import run_ner_no_trainer
from conftest import ROOT, examples, write_jsonl
from nerkit.errors import UserError
from nerkit.workflow import LogLevels, trainer_log_levels
from test_run_ner import read_json, run_script

# The flags of upstream's examples/pytorch/test_pytorch_examples.py::test_run_ner and
# test_accelerate_examples.py::test_run_ner_no_trainer, after the model, files and output folder.
UPSTREAM_FLAGS = {
    "run_ner.py": "--overwrite_output_dir --do_train --do_eval --warmup_steps=2 --learning_rate=2e-4 "
                  "--per_device_train_batch_size=2 --per_device_eval_batch_size=2 --num_train_epochs=2 --seed 7",
    "run_ner_no_trainer.py": "--learning_rate=2e-4 --per_device_train_batch_size=2 --per_device_eval_batch_size=2 "
                             "--num_train_epochs=2 --seed 7 --checkpointing_steps epoch --with_tracking",
}
SCRIPTS = {"run_ner.py": run_ner, "run_ner_no_trainer.py": run_ner_no_trainer}
ESCAPES = re.compile(r"\x1b|\r")  # terminal codes and the carriage returns that redraw progress bars


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A file like upstream's tests/fixtures/tests_samples/conll/sample.json: JSON Lines of `words`, `ner`."""
    path = tmp_path_factory.mktemp("conll") / "sample.json"
    path.write_text("".join(json.dumps({"words": words, "ner": tags}) + "\n" for words, tags in examples(10)))
    return str(path)


def upstream_argv(script, model, sample, output_dir):
    argv = [script, "--model_name_or_path", model, "--train_file", sample, "--validation_file", sample,
            "--output_dir", str(output_dir), *UPSTREAM_FLAGS[script].split()]
    if script == "run_ner.py" and not torch.cuda.is_available():
        argv.append("--use_cpu")  # as upstream's test does on CPU
    return argv


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("how", ["in-process", "subprocess"])
def test_upstream_example_test_passes(script, how, tiny_bert, sample, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()  # upstream hands the scripts an existing, empty temporary folder
    argv = upstream_argv(script, tiny_bert, sample, output_dir)
    if how == "in-process":
        with patch.object(sys, "argv", argv):
            SCRIPTS[script].main()
    else:
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert result.returncode == 0, result.stderr[-3000:]
    results = read_json(output_dir / "all_results.json")
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and "eval_loss" in results and "train_loss" in results
    if script == "run_ner_no_trainer.py":
        assert (output_dir / "epoch_0").is_dir() and (output_dir / "ner_no_trainer").is_dir()


def test_the_same_training_reports_upstreams_losses(tiny_bert, tmp_path):
    """With padded batches (--no_packing) in fp32 (--no_auto_mixed_precision: on a CPU with bf16 instructions
    the automatic choice is bf16, upstream's recipe is fp32 everywhere) and torch's dropout masks
    (--no_fast_dropout_masks: on a CPU where torch's masks are slow, the suite draws other masks of the same
    distribution) the Trainer trains exactly as upstream's recipe does (the projections are fused in bf16
    only); the losses it reports must then be
    upstream's too. The eval loss is a mean of
    batch means, so it holds only if the validation batches are upstream's: the data's order, not longest
    first."""
    rows = examples(9) + [(["Halftime"], ["O"]), (["Paris"] * 30, ["B-LOC"] * 30)]  # lengths 1 to 30
    data = write_jsonl(tmp_path / "data.json", rows)
    flags = ["--model_name_or_path", tiny_bert, "--train_file", data, "--validation_file", data, "--do_train",
             "--do_eval", *UPSTREAM_FLAGS["run_ner.py"].replace("--overwrite_output_dir ", "").split(), "--use_cpu",
             "--report_to", "none", "--save_strategy", "no"]
    losses = {}
    for name, script in (("ours", "run_ner.py"), ("upstream", os.path.join("bench", "upstream_run_ner.py"))):
        extra = ["--no_packing", "--no_auto_mixed_precision", "--no_fast_dropout_masks"] if name == "ours" else []
        result = subprocess.run([sys.executable, script, *flags, "--output_dir", str(tmp_path / name), *extra],
                                capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert result.returncode == 0, result.stderr[-3000:]
        losses[name] = (read_json(tmp_path / name / "train_results.json")["train_loss"],
                        read_json(tmp_path / name / "eval_results.json")["eval_loss"])
    assert losses["ours"] == pytest.approx(losses["upstream"], rel=1e-5)


@pytest.mark.parametrize("script", SCRIPTS)
def test_main_raises_user_errors_and_mp_fn_exits_with_them(script, tiny_bert, sample, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    argv = [script, "--model_name_or_path", tiny_bert, "--train_file", sample, "--output_dir", str(tmp_path)]
    argv += ["--do_train"] if script == "run_ner.py" else []
    with patch.object(sys, "argv", argv):
        with pytest.raises(UserError, match="--overwrite_output_dir"):
            SCRIPTS[script].main()  # callers see the exception, as upstream's tests expect
        with pytest.raises(SystemExit) as stopped:
            SCRIPTS[script]._mp_fn(0)  # a launcher's process ends with the message and status 2
    assert stopped.value.code == 2
    assert os.listdir(tmp_path) == ["notes.txt"]


def finished_run_args(model, sample, output_dir, *flags):
    return ["--model_name_or_path", model, "--train_file", sample, "--validation_file", sample, "--output_dir",
            str(output_dir), "--do_train", "--do_eval", "--num_train_epochs", "2", "--learning_rate", "5e-3",
            "--report_to", "none", "--save_strategy", "epoch", "--seed", "7", "--per_device_train_batch_size", "2",
            *flags]


def test_running_a_finished_command_again_is_refused_and_keeps_its_results(tiny_bert, sample, tmp_path):
    args = finished_run_args(tiny_bert, sample, tmp_path, "--do_predict", "--test_file", sample)
    run_ner.cli(args)
    assert (tmp_path / "predictions.txt").is_file() and (tmp_path / "errors_test.json").is_file()
    before = {name: (tmp_path / name).read_text() for name in ("train_results.json", "all_results.json")}
    with pytest.raises(UserError, match="finished training run"):
        run_ner.cli(args)
    assert {name: (tmp_path / name).read_text() for name in before} == before
    # a run killed after its last checkpoint, while writing its final model, has finished training too: the
    # message names the checkpoint that holds the trained model, and that works as --model_name_or_path
    (tmp_path / "train_results.json").unlink()
    (tmp_path / "model.safetensors").write_bytes(b"half")
    with pytest.raises(UserError, match=f"ended at step 10 .* The trained model is in {tmp_path}/checkpoint-10"):
        run_ner.cli(args)
    # the same, after the Trainer removed the last checkpoint (--save_total_limit 1 with a best one elsewhere):
    # the trainer_state.json written before the final model says training ended, not checkpoint-5's
    shutil.move(tmp_path / "checkpoint-10", tmp_path.parent / "kept-checkpoint-10")
    with pytest.raises(UserError, match="ended at step 10 .* No checkpoint holds the trained model"):
        run_ner.cli(args)
    shutil.move(tmp_path.parent / "kept-checkpoint-10", tmp_path / "checkpoint-10")
    run_ner.cli(["--model_name_or_path", str(tmp_path / "checkpoint-10"), "--validation_file", sample, "--do_eval",
                 "--output_dir", str(tmp_path / "scored"), "--report_to", "none"])
    assert read_json(tmp_path / "scored" / "eval_results.json")["eval_f1"] == \
        read_json(tmp_path / "eval_results.json")["eval_f1"]
    # --overwrite_output_dir trains again from the start (a resumed finished run would report train_loss 0.0),
    # and the earlier run's results and checkpoints go: no stale predict_ keys in all_results.json, and no
    # checkpoint-10 of the 2-epoch run left beside this 1-epoch run's, for a resume to take as its own
    run_ner.cli(finished_run_args(tiny_bert, sample, tmp_path, "--overwrite_output_dir", "--num_train_epochs", "1"))
    assert read_json(tmp_path / "train_results.json")["train_loss"] > 0
    assert not (tmp_path / "predict_results.json").exists() and not (tmp_path / "predictions.txt").exists()
    assert not (tmp_path / "errors_test.json").exists()
    assert not any(key.startswith("predict_") for key in read_json(tmp_path / "all_results.json"))
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-5"]
    # a fresh start would remove the checkpoint it is asked to fine-tune from: refused, the checkpoint kept
    with pytest.raises(UserError, match="the model would be deleted"):
        run_ner.cli(finished_run_args(str(tmp_path / "checkpoint-5"), sample, tmp_path, "--overwrite_output_dir"))
    assert (tmp_path / "checkpoint-5" / "model.safetensors").is_file()
    # resuming a checkpoint that ended its run trains nothing: refused, the results kept
    before = (tmp_path / "all_results.json").read_text()
    with pytest.raises(UserError, match="checkpoint-5 is the last step of a finished run"):
        run_ner.cli(finished_run_args(tiny_bert, sample, tmp_path / "again", "--num_train_epochs", "1",
                                      "--resume_from_checkpoint", str(tmp_path / "checkpoint-5")))
    assert (tmp_path / "all_results.json").read_text() == before and not (tmp_path / "again").exists()


def test_a_checkpoint_saved_without_its_optimizer_is_not_resumed(tiny_bert, sample, tmp_path):
    # --save_only_model: a resume would restart the optimizer and the schedule, a run unlike the interrupted one
    args = finished_run_args(tiny_bert, sample, tmp_path, "--save_only_model")
    run_ner.cli(args)
    shutil.rmtree(tmp_path / "checkpoint-10")  # as if killed in the second epoch
    for name in ("train_results.json", "trainer_state.json"):  # written once training is over
        (tmp_path / name).unlink()
    for resume in ([], ["--resume_from_checkpoint", str(tmp_path / "checkpoint-5")]):
        with pytest.raises(UserError, match="checkpoint-5 holds no optimizer state .* --save_only_model"):
            run_ner.cli(args + resume)
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-5"]


def test_the_log_of_a_run_has_one_short_line_per_epoch_and_no_bars(tiny_bert, sample, tmp_path):
    result = run_script(*finished_run_args(tiny_bert, sample, tmp_path, "--eval_strategy", "epoch",
                                           "--logging_strategy", "epoch", "--num_train_epochs", "3",
                                           "--return_entity_level_metrics", "--save_strategy", "no"))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert not ESCAPES.search(log) and "it/s" not in log
    epochs = [line for line in log.splitlines() if re.search(r"epoch \d/3 \(step \d+/\d+\): loss", line)]
    assert len(epochs) == 3 and all("F1" in line and len(line) < 200 for line in epochs)
    assert "{'" not in log  # no metric dicts
    assert log.count("precision  recall      f1  number") == 1  # the table per entity type, once
    assert re.search(r"^PER +[\d.]+ +[\d.]+ +[\d.]+ +\d+$", log, re.MULTILINE)


@pytest.mark.parametrize("flags, levels", [
    ([], LogLevels(logging.INFO, logging.WARNING, logging.ERROR)),  # warnings come once, from the main process
    (["--log_level", "error"], LogLevels(logging.ERROR, logging.ERROR, logging.ERROR)),
    (["--log_level", "debug", "--log_level_replica", "info"], LogLevels(logging.DEBUG, logging.DEBUG, logging.INFO)),
    (["--log_level_replica", "critical"], LogLevels(logging.INFO, logging.WARNING, logging.CRITICAL)),
])
def test_log_levels_follow_the_trainers_flags(flags, levels):
    argv = ["--model_name_or_path", "m", "--train_file", "t.json", "--output_dir", "o", *flags]
    training_args = run_ner.parse_command_line(argv)[2]
    assert trainer_log_levels(training_args) == levels


def test_log_level_error_leaves_only_the_metrics(tiny_bert, sample, tmp_path):
    result = run_script(*finished_run_args(tiny_bert, sample, tmp_path, "--log_level", "error", "--save_strategy",
                                           "no"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert " - INFO - " not in result.stdout and " - WARNING - " not in result.stdout
    assert "***** eval metrics *****" in result.stdout  # printed, as upstream prints them, whatever the level


def test_the_loop_logs_one_short_line_per_epoch_and_no_bars(tiny_bert, sample, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_ner_no_trainer.py"), "--model_name_or_path",
                             tiny_bert, "--train_file", sample, "--validation_file", sample, "--output_dir",
                             str(tmp_path), "--num_train_epochs", "2", "--seed", "7"], capture_output=True,
                            text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert not ESCAPES.search(log) and "it/s" not in log
    epochs = [line for line in log.splitlines() if re.search(r"epoch \d: loss", line)]
    assert len(epochs) == 2 and all("best F1" in line and len(line) < 200 for line in epochs)


@pytest.mark.parametrize("epoch, step, max_steps, batches, accumulation, shown", [
    (1.0, 120, 360, 120, 1, "epoch 1/3 (step 120/360)"),
    (0.5, 4, 4, 8, 1, "epoch 0.5/0.5 (step 4/4)"),  # --max_steps 4 of 8 an epoch: the Trainer counts 1 epoch
    (1.25, 50, 60, 40, 1, "epoch 1.25/1.5 (step 50/60)"),
    # 11 batches an epoch, 3 a step: 4 steps an epoch, the last of 2 batches
    (3 / 11, 1, 8, 11, 3, "epoch 0.27/2 (step 1/8)"),
    (1 + 3 / 11, 5, 6, 11, 3, "epoch 1.27/1.55 (step 5/6)"),
    (1.0, 10, 20, None, 1, "epoch 1/7 (step 10/20)"),  # no length: the Trainer's own count
])
def test_the_progress_line_counts_the_epochs_the_run_will_train(epoch, step, max_steps, batches, accumulation,
                                                                shown):
    from types import SimpleNamespace

    from nerkit.progress import run_epochs, trainer_line

    state = SimpleNamespace(log_history=[], global_step=step, max_steps=max_steps, num_train_epochs=7, epoch=epoch)
    loader = range(batches) if batches else iter(())
    epochs = run_epochs(SimpleNamespace(gradient_accumulation_steps=accumulation), state, train_dataloader=loader)
    line = trainer_line(SimpleNamespace(metric_for_best_model=None), state, SimpleNamespace(should_evaluate=False),
                        {"loss": 0.5, "epoch": epoch}, epochs)
    assert line == f"{shown}: loss 0.5000"


@pytest.mark.parametrize("metric", [None, "f1", "eval_f1", "loss", "precision"])
def test_the_progress_line_names_the_evaluation_the_trainer_keeps(metric, tmp_path):
    """The Trainer weighs the evaluations made while training by --metric_for_best_model (not
    --eval_on_start's): the line's "best" is the one its own bookkeeping picks."""
    from types import SimpleNamespace

    from transformers import Trainer, TrainerState, TrainingArguments

    from nerkit.progress import trainer_line

    args = TrainingArguments(str(tmp_path), metric_for_best_model=metric, eval_strategy="epoch",
                             save_strategy="epoch", load_best_model_at_end=metric is not None, report_to="none")
    scores = [(0.9, 0.20, 0.1), (0.5, 0.40, 0.6), (0.4, 0.45, 0.5), (0.45, 0.45, 0.7), (0.6, 0.35, 0.7)]
    trainer = SimpleNamespace(args=args, state=TrainerState())  # what Trainer._determine_best_metric reads
    history, lines, kept = [], [], []
    for step, (loss, f1, precision) in enumerate(scores):  # step 0: --eval_on_start's evaluation
        logs = {"eval_loss": loss, "eval_f1": f1, "eval_precision": precision, "epoch": float(step)}
        history.append({**logs, "step": step})
        state = SimpleNamespace(log_history=history, global_step=step, max_steps=4, num_train_epochs=4, epoch=step)
        lines.append(trainer_line(args, state, SimpleNamespace(should_evaluate=False), logs))
        if step and Trainer._determine_best_metric(trainer, logs, None):
            kept.append(step)
    assert "best" not in lines[0]  # nothing the Trainer keeps yet
    if metric is None:  # nothing kept: the best F1 while training
        assert lines[-1].endswith("F1 0.3500, best F1 0.4500 (epoch 2)") and not kept
    else:
        name, value = {"loss": ("validation loss", 0.4), "precision": ("validation precision", 0.7)}.get(
            metric, ("F1", 0.45))
        assert lines[-1].endswith(f"best {name} {value:.4f} (epoch {kept[-1]})")
