"""nerkit.resume: a checkpoint resumes only with the examples a step and on training data of the size it was
trained with, in both scripts and under torchrun; anything else is refused before any weights load."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

import run_ner
import run_ner_no_trainer
from conftest import ROOT
from nerkit.errors import UserError
from nerkit.data import Split
from nerkit.resume import (TRAIN_BATCH_FILE, TrainBatch, TrainingData, check_same_train_batch,
                           check_same_training_data, record_train_batch)
from test_run_ner import read_json

# several processes on the CPU, also on a machine with GPUs: as on one without (CUDA_VISIBLE_DEVICES empty)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def training_data(count, tag="O", windows=None):
    return TrainingData(Split("train", "train.json", [["word"]] * count, [[tag]] * count, [""] * count),
                        windows or count)


def training_data_of(path):
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return TrainingData(Split("train", path, [row["tokens"] for row in rows], [row["ner_tags"] for row in rows],
                              [""] * len(rows)), len(rows))


@pytest.mark.parametrize("now, outcome", [
    (TrainBatch(16, 1, 1), None),
    (TrainBatch(8, 2, 1), "warning"),  # the same 16 examples a step
    (TrainBatch(8, 1, 2), "warning"),
    (TrainBatch(16, 1, 2), "this run has 32 \\(16 a device x 1 accumulation step x 2 processes\\).*"
                           "--per_device_train_batch_size 8 with this run's 1 accumulation step and 2 processes"),
    (TrainBatch(16, 2, 1), "--per_device_train_batch_size 8 with this run's 2 accumulation steps"),
    (TrainBatch(5, 3, 1), "Resume with 16 examples a step \\(as it was: 16 \\(16 a device"),  # 16 is not 3 x k
])
def test_a_checkpoint_resumes_only_with_its_examples_a_step(tmp_path, caplog, now, outcome):
    record_train_batch(tmp_path, TrainBatch(16, 1, 1), training_data(40))
    if outcome not in (None, "warning"):
        with pytest.raises(UserError, match=f"{tmp_path} was trained with 16 \\(16 a device.*" + outcome):
            check_same_train_batch(str(tmp_path), now)
        return
    with caplog.at_level(logging.WARNING, logger="nerkit.resume"):
        check_same_train_batch(str(tmp_path), now)
    assert ("other random numbers" in caplog.text) == (outcome == "warning")


def test_a_checkpoint_without_the_record_is_resumed_and_an_unreadable_one_is_refused(tmp_path):
    check_same_train_batch(str(tmp_path), TrainBatch(4, 1, 1))  # written before the record: nothing to compare
    (tmp_path / TRAIN_BATCH_FILE).write_text("{\"per_device\": 4")
    with pytest.raises(UserError, match=f"{TRAIN_BATCH_FILE} cannot be read"):
        check_same_train_batch(str(tmp_path), TrainBatch(4, 1, 1))


def test_a_checkpoint_resumes_only_on_data_of_its_size(tmp_path):
    record_train_batch(tmp_path, TrainBatch(4, 1, 1), training_data(40))
    check_same_training_data(str(tmp_path), training_data(40), "--max_length")
    check_same_training_data(None, training_data(41), "--max_length")  # nothing to resume
    with pytest.raises(UserError, match="was trained on 40 training examples, and the training data now has 41"):
        check_same_training_data(str(tmp_path), training_data(41), "--max_length")


def test_the_same_examples_cut_into_other_windows_are_refused(tmp_path):
    record_train_batch(tmp_path, TrainBatch(4, 1, 1), training_data(40, windows=40))
    with pytest.raises(UserError, match="40 training examples cut into 40 windows, and they now make 46 \\(another "
                                        "--max_seq_length, or another tokenizer\\).*Resume with the --max_seq_length"):
        check_same_training_data(str(tmp_path), training_data(40, windows=46), "--max_seq_length")


def test_data_of_its_size_edited_in_place_is_resumed_with_a_warning(tmp_path, caplog):
    record_train_batch(tmp_path, TrainBatch(4, 1, 1), training_data(40))
    with caplog.at_level(logging.WARNING, logger="nerkit.resume"):
        check_same_training_data(str(tmp_path), training_data(40), "--max_length")
        assert not caplog.text
        check_same_training_data(str(tmp_path), training_data(40, tag="B-PER"), "--max_length")  # labels corrected, say
    assert "40 examples both times, but other words or tags in some" in caplog.text


def test_auto_find_batch_size_compares_the_batch_the_checkpoint_found(tmp_path):
    record_train_batch(tmp_path, TrainBatch(4, 1, 1), training_data(40))  # the Trainer had come down from 16 to 4
    check_same_train_batch(str(tmp_path), TrainBatch(16, 1, 1), per_device_found=True)
    with pytest.raises(UserError, match="this run has 8"):
        check_same_train_batch(str(tmp_path), TrainBatch(16, 1, 2), per_device_found=True)


def trainer_args(model, ner_files, output_dir, *flags):
    return ["--model_name_or_path", model, "--train_file", ner_files["train"], "--output_dir", str(output_dir),
            "--do_train", "--num_train_epochs", "2", "--learning_rate", "5e-3", "--report_to", "none",
            "--save_strategy", "steps", "--save_steps", "5", "--seed", "7", "--per_device_train_batch_size", "4",
            "--disable_tqdm", "True", *flags]


def refuse_weights(monkeypatch):
    """From here on, fail the test if a training script loads model weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the checkpoint was refused")

    for module in (run_ner, run_ner_no_trainer):
        monkeypatch.setattr(module, "load_model", refuse)


def test_the_trainer_resumes_only_with_the_checkpoints_examples_a_step(tiny_bert, ner_files, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    run_ner.cli(trainer_args(tiny_bert, ner_files, whole))  # 40 examples, 4 a step: 10 steps an epoch
    assert read_json(whole / "checkpoint-5" / TRAIN_BATCH_FILE) == {
        "per_device": 4, "accumulation": 1, "processes": 1, "devices": 1, "train_examples": 40, "train_windows": 40,
        "train_digest": training_data_of(ner_files["train"]).digest}
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "checkpoint-5", resumed / "checkpoint-5")  # as if killed after it
    refuse_weights(monkeypatch)
    for flags in ([], ["--resume_from_checkpoint", str(resumed / "checkpoint-5")]):  # found, or named
        with pytest.raises(UserError, match="checkpoint-5 was trained with 4 .* this run has 8.* fine-tune from its "
                                             "weights as a new run \\(--model_name_or_path .*checkpoint-5"):
            run_ner.cli(trainer_args(tiny_bert, ner_files, resumed, "--gradient_accumulation_steps", "2", *flags))
    with pytest.raises(UserError, match="trained on 40 training examples, and the training data now has 30"):
        run_ner.cli(trainer_args(tiny_bert, ner_files, resumed, "--max_train_samples", "30"))
    assert sorted(os.listdir(resumed)) == ["checkpoint-5"]


def test_torchrun_with_another_total_is_refused_and_the_same_total_resumes_in_place(tiny_bert, ner_files, tmp_path):
    whole = tmp_path / "whole"
    run_ner.cli(trainer_args(tiny_bert, ner_files, whole))
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "checkpoint-5", resumed / "checkpoint-5")
    script = os.path.join(ROOT, "run_ner.py")
    refused = subprocess.run([*TORCHRUN, script, *trainer_args(tiny_bert, ner_files, resumed)], env=ENV, cwd=ROOT,
                             capture_output=True, text=True)
    # each process says why and exits 2 (torchrun then reports its failed workers with a traceback of its own)
    assert refused.returncode != 0 and "raise UserError" not in refused.stderr
    assert "this run has 8 (4 a device x 1 accumulation step x 2 processes)" in refused.stderr
    assert "--per_device_train_batch_size 2 with this run's 1 accumulation step and 2 processes" in refused.stderr
    assert sorted(os.listdir(resumed)) == ["checkpoint-5"]
    # 2 a device on 2 processes: 4 examples a step, as the checkpoint trained; it ends where the whole run ended
    result = subprocess.run([*TORCHRUN, script, *trainer_args(tiny_bert, ner_files, resumed),
                             "--per_device_train_batch_size", "2"], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running on 2 process(es)" in result.stdout
    assert result.stdout.count("dropout draws other random numbers") == 1  # once, not once a process
    assert read_json(resumed / "trainer_state.json")["global_step"] == \
        read_json(whole / "trainer_state.json")["global_step"] == 20


def test_the_loop_resumes_only_with_the_checkpoints_examples_a_step(tiny_bert, ner_files, tmp_path, monkeypatch):
    def loop_args(output_dir, *flags):
        return ["--model_name_or_path", tiny_bert, "--train_file", ner_files["train"], "--output_dir",
                str(output_dir), "--num_train_epochs", "2", "--learning_rate", "5e-3", "--seed", "7",
                "--per_device_train_batch_size", "4", "--checkpointing_steps", "5", *flags]

    whole = tmp_path / "whole"
    run_ner_no_trainer.cli(loop_args(whole))
    record = read_json(whole / "step_5" / TRAIN_BATCH_FILE)
    assert record["per_device"] == 4 and record["train_digest"] == training_data_of(ner_files["train"]).digest
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "step_5", resumed / "step_5")
    with monkeypatch.context() as patched:
        refuse_weights(patched)
        with pytest.raises(UserError, match="step_5 was trained with 4 .* this run has 8") as refused:
            run_ner_no_trainer.cli(loop_args(resumed, "--per_device_train_batch_size", "8",
                                             "--resume_from_checkpoint", "latest"))
        assert "fine-tune" not in str(refused.value)  # accelerate's state is no model folder to start from
        with pytest.raises(UserError, match="trained on 40 training examples, and the training data now has 30"):
            run_ner_no_trainer.cli(loop_args(resumed, "--max_train_samples", "30", "--resume_from_checkpoint",
                                             "latest"))
        with pytest.raises(UserError, match="cut into 40 windows, and they now make [0-9]+ \\(another --max_length"):
            run_ner_no_trainer.cli(loop_args(resumed, "--max_length", "8", "--resume_from_checkpoint", "latest"))
    # the same 4 examples a step as 2 a device, accumulated twice: resumed at its place, to the same last step
    run_ner_no_trainer.cli(loop_args(resumed, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                                     "2", "--resume_from_checkpoint", "latest"))
    assert read_json(resumed / "step_20" / "loop_state.json")["completed_steps"] == 20
    assert sorted(path.name for path in resumed.glob("step_*")) == sorted(path.name for path in whole.glob("step_*"))


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes(data[:80] if how == "cut" else b"{bad")


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_a_damaged_checkpoint_is_named_before_any_weights_load(script, tiny_bert, ner_files, tmp_path, monkeypatch):
    """A checkpoint file cut short or overwritten (the weights, the optimizer's state, the config, the loop's
    state) would fail inside the Trainer or accelerate with a traceback, after the weights load."""
    trainer = script == "run_ner.py"
    module, checkpoint = (run_ner, "checkpoint-5") if trainer else (run_ner_no_trainer, "step_5")
    argv = trainer_args(tiny_bert, ner_files, tmp_path / "whole") if trainer else [
        "--model_name_or_path", tiny_bert, "--train_file", ner_files["train"], "--output_dir", str(tmp_path / "whole"),
        "--num_train_epochs", "2", "--seed", "7", "--per_device_train_batch_size", "4", "--checkpointing_steps", "5"]
    module.cli(argv)
    files = ["model.safetensors"] + (["config.json", "optimizer.pt", "rng_state.pth"] if trainer else
                                     ["optimizer.bin", "random_states_0.pkl", "loop_state.json"])
    refuse_weights(monkeypatch)
    for name in files:
        for how in ("cut", "overwrite"):
            copy = tmp_path / f"{name}-{how}" / checkpoint
            shutil.copytree(tmp_path / "whole" / checkpoint, copy)
            damage(copy / name, how)
            resume = ["--resume_from_checkpoint", str(copy), "--output_dir", str(tmp_path / "resumed")]
            with pytest.raises(UserError, match=f"The checkpoint {copy} is damaged: {name} cannot be read") as refused:
                module.cli([*argv, *resume])
            assert "--overwrite_output_dir" in str(refused.value) and not (tmp_path / "resumed").exists()
