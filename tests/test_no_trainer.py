"""run_ner_no_trainer.py: parity with run_ner.py, accumulation, resume, launchers."""

import glob
import json
import logging
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import AutoModelForTokenClassification

import run_ner_no_trainer
from nerkit.errors import UserError
from nerkit.modeling import load_model
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
                        "--return_entity_level_metrics", files=files)
    shared = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "train_results.json",
              "eval_results.json", "predict_results.json", "all_results.json", "predictions.txt",
              "predictions.jsonl"}
    assert shared <= set(os.listdir(trainer_dir)) and shared <= set(os.listdir(loop_dir))
    assert read_json(trainer_dir / "config.json")["id2label"] == read_json(loop_dir / "config.json")["id2label"]
    for name in ("train_results.json", "eval_results.json", "predict_results.json", "all_results.json"):
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
    card = (accumulated / "README.md").read_text(encoding="utf-8")
    for line in ("- learning_rate: 0.001", "- train_batch_size: 4", "- gradient_accumulation_steps: 2",
                 "- total_train_batch_size: 8", "- num_epochs: 2", "- seed: 7"):
        assert line in card, line


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_bert, files, tmp_path):
    common = ["--num_train_epochs", "3", "--checkpointing_steps", "4"]
    whole = run_loop(tiny_bert, tmp_path / "whole", *common, files=files)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "step_4", resumed / "step_4")  # the state of a run stopped mid-epoch 1 of 3
    run_loop(tiny_bert, resumed, *common, "--resume_from_checkpoint", "latest", files=files)
    assert read_json(resumed / "eval_results.json")["eval_f1"] == read_json(whole / "eval_results.json")["eval_f1"]
    assert predictions(resumed) == predictions(whole)
    assert read_json(resumed / "train_results.json")["total_flos"] == read_json(whole / "train_results.json")[
        "total_flos"] > 0  # the steps before the checkpoint count once
    weights, resumed_weights = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all((weights[name] - resumed_weights[name]).abs().max() < 1e-5 for name in weights)
    # stopped in the last epoch, the resumed run reports that whole epoch's mean loss
    late = tmp_path / "late"
    shutil.copytree(whole / "step_12", late / "step_12")  # steps 11 to 15 are the last epoch
    run_loop(tiny_bert, late, *common, "--resume_from_checkpoint", "latest", files=files)
    assert read_json(late / "train_results.json")["train_loss"] == pytest.approx(
        read_json(whole / "train_results.json")["train_loss"], rel=1e-5)
    # a checkpoint that completed the run's steps would train nothing and report the old model as trained
    with pytest.raises(UserError, match="has completed 12 optimizer steps, and this run has 12"):
        run_loop(tiny_bert, tmp_path / "done", *common, "--max_train_steps", "12", "--resume_from_checkpoint",
                 str(whole / "step_12"), files=files)
    # a fresh start in the folder removes the earlier run's checkpoints, so none is resumed as this run's
    run_loop(tiny_bert, whole, "--num_train_epochs", "1", "--checkpointing_steps", "4", "--overwrite_output_dir",
             files=files)
    assert sorted(path.name for path in whole.glob("step_*")) == ["step_4"]
    with pytest.raises(UserError, match="the model would be deleted"):  # a fresh start from one of them
        run_loop(str(whole / "step_4"), whole, "--overwrite_output_dir", files=files)
    assert (whole / "step_4" / "loop_state.json").is_file()


@pytest.mark.parametrize("flags, last", [(["--num_train_epochs", "3", "--checkpointing_steps", "5"], "step_15"),
                                         (["--max_train_steps", "7", "--checkpointing_steps", "7"], "step_7")])
def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resuming(tiny_bert, files, tmp_path, flags, last,
                                                                        monkeypatch):
    # killed while writing its final model: the last checkpoint completed every step (at an epoch's end, or
    # mid-epoch with --max_train_steps), and resuming it only ends the epoch, scores, saves: no extra step
    whole = run_loop(tiny_bert, tmp_path / "whole", *flags, files=files)
    killed = tmp_path / "killed"
    shutil.copytree(whole / last, killed / last)
    (killed / "model.safetensors").write_bytes(b"half")
    run_loop(tiny_bert, killed, *flags, "--resume_from_checkpoint", "latest", files=files)
    for name in ("train_results.json", "eval_results.json"):
        finished, uninterrupted = read_json(killed / name), read_json(whole / name)
        assert {key: value for key, value in finished.items() if "runtime" not in key and "per_second" not in key} \
            == pytest.approx({key: value for key, value in uninterrupted.items()
                              if "runtime" not in key and "per_second" not in key}, rel=1e-5)
    assert predictions(killed) == predictions(whole)
    assert same_weights(weights(killed), weights(whole))
    # its results written, the run is finished: resuming it again is refused, before the weights load
    monkeypatch.setattr(run_ner_no_trainer, "load_model", refuse_to_load)
    with pytest.raises(UserError, match="would train nothing"):
        run_loop(tiny_bert, killed, *flags, "--resume_from_checkpoint", "latest", files=files)


def refuse_to_load(*args, **kwargs):
    raise AssertionError("the model was loaded")


@pytest.mark.parametrize("examples, batch_size, processes", [(100, 8, 1), (100, 8, 2), (96, 8, 2), (97, 8, 3),
                                                             (5, 16, 2), (1, 1, 4)])
def test_the_steps_known_before_the_model_loads_are_the_prepared_loaders(examples, batch_size, processes):
    # accelerate shards each epoch's batches over the processes, the last ones padded to even batches
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    batches = BatchSampler(SequentialSampler(range(examples)), batch_size, drop_last=False)
    shards = {len(BatchSamplerShard(batches, processes, index)) for index in range(processes)}
    args = SimpleNamespace(per_device_train_batch_size=batch_size, gradient_accumulation_steps=3,
                           num_train_epochs=2, max_train_steps=None)
    assert run_ner_no_trainer.planned_steps(examples, args, processes) == \
        run_ner_no_trainer.training_length(shards.pop(), args)[0]
    assert not shards


def test_resuming_a_checkpoint_of_another_model_is_refused(tiny_bert, tiny_roberta, files, tmp_path):
    run_loop(tiny_bert, tmp_path, "--max_train_steps", "1", "--checkpointing_steps", "1", files=files)
    with pytest.raises(UserError, match=f"The checkpoint {tmp_path / 'step_1'} was trained from another model than "
                                        f"--model_name_or_path {tiny_roberta} \\(no weight named roberta"):
        run_loop(tiny_roberta, tmp_path, "--max_train_steps", "2", "--resume_from_checkpoint", "latest",
                 files=files)

def test_a_run_without_a_seed_resumes_in_another_process_to_the_same_weights(tiny_bert, files, tmp_path):
    # each process draws its own shuffling seed; the resumed one must shuffle the epochs left as the first did
    common = ["--model_name_or_path", tiny_bert, "--train_file", files["train"], "--learning_rate", "5e-3",
              "--per_device_train_batch_size", "8", "--num_train_epochs", "3", "--checkpointing_steps", "epoch"]
    whole = tmp_path / "whole"
    assert script(*common, "--output_dir", str(whole)).returncode == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "epoch_0", resumed / "epoch_0")
    result = script(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-2000:]
    weights, resumed_weights = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all((weights[name] - resumed_weights[name]).abs().max() < 1e-5 for name in weights)

def test_non_empty_output_dir_needs_resume_or_overwrite(tiny_bert, files, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = script("--model_name_or_path", tiny_bert, "--train_file", files["train"], "--output_dir", str(tmp_path))
    assert result.returncode == 2 and "--overwrite_output_dir" in result.stderr and "Traceback" not in result.stderr
    assert "not empty. Choose another --output_dir" in result.stderr
    assert os.listdir(tmp_path) == ["old.txt"]


def test_help_lists_the_upstream_flags():
    result = script("--help")
    assert result.returncode == 0
    for flag in ("--max_length", "--per_device_train_batch_size", "--gradient_accumulation_steps",
                 "--lr_scheduler_type", "--num_warmup_steps", "--checkpointing_steps", "--resume_from_checkpoint",
                 "--with_tracking", "--report_to", "--hub_token", "--model_type", "--debug", "--test_file",
                 "--label_all_tokens", "--load_best_model_at_end", "--max_grad_norm"):
        assert flag in result.stdout, flag


def test_debug_with_csv_input_tracking_and_clipping(tiny_bert, tmp_path, clipped):
    csv_files = {"train": write_rows(tmp_path / "train.csv", examples(120)),
                 "validation": write_rows(tmp_path / "dev.csv", examples(5))}
    output = run_loop(tiny_bert, tmp_path / "o", "--debug", "--num_train_epochs", "1", "--with_tracking",
                      "--report_to", "tensorboard", "--max_grad_norm", "1.0", files=csv_files)
    assert read_json(output / "train_results.json")["train_samples"] == 100  # --debug keeps 100 per split
    assert len(clipped) == 13  # every optimizer step: 100 examples in batches of 8
    assert glob.glob(str(output / "**" / "*tfevents*"), recursive=True)


def test_accelerate_launch_on_cpu(tiny_bert, files, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = script("--model_name_or_path", tiny_bert, "--train_file", files["train"], "--test_file",
                    files["test"], "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "1", *LOOP,
                    launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [len(line) for line in predictions(tmp_path / "o")] == [len(t) for t, _ in examples(5, offset=2)]


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


# --early_stopping_threshold 1.0: no epoch after the first counts as an improvement of the validation F1, so
# the best epoch is the first and the last one is something else.
NO_LATER_IMPROVEMENT = ["--early_stopping_threshold", "1.0"]


@pytest.fixture
def training_losses(monkeypatch):
    """Every training batch's loss, recorded by a forward hook on the model the script loads."""
    losses = []

    def hooked(*args, **kwargs):
        model = load_model(*args, **kwargs)
        model.register_forward_hook(lambda module, _, output: losses.append(output.loss.item())
                                    if module.training else None)
        return model

    monkeypatch.setattr(run_ner_no_trainer, "load_model", hooked)
    return losses


@pytest.fixture
def clipped(monkeypatch):
    """Optimizer steps whose gradients were clipped: by accelerate's clip_grad_norm_, or inside the fused
    step, which is then given a scale to divide them by (nerkit.clipping)."""
    calls = []
    real = Accelerator.clip_grad_norm_
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, *a, **k: calls.append(k) or real(self, *a, **k))
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: calls.append("in the step") if getattr(optimizer, "grad_scale", None) is not None else None)
    yield calls
    handle.remove()


def test_results_and_model_are_the_last_epochs_as_upstream(tiny_bert, files, tmp_path, training_losses, clipped):
    output = run_loop(tiny_bert, tmp_path / "o", "--num_train_epochs", "2", "--checkpointing_steps", "epoch",
                      *NO_LATER_IMPROVEMENT, files={"train": files["train"], "validation": files["validation"]})
    results = read_json(output / "all_results.json")
    assert results["epoch"] == read_json(output / "train_results.json")["epoch"] == 2.0  # 2 epochs trained
    assert len(training_losses) == 10  # 40 examples in batches of 8, twice
    assert results["train_loss"] == pytest.approx(sum(training_losses[5:]) / 5, rel=1e-5)  # the last epoch's
    assert results["train_loss"] != pytest.approx(sum(training_losses) / 10, rel=1e-5)
    assert not clipped  # no gradient clipping by default, as upstream
    assert not [key for key in results if key.startswith("best_")]
    # the saved model is the last epoch's, and eval_* are its scores
    assert same_weights(weights(output), weights(output / "epoch_1"))
    assert not same_weights(weights(output), weights(output / "epoch_0"))
    # --num_train_epochs 0 evaluates the trained model as it is, with no training data needed
    again = read_json(run_loop(str(output), tmp_path / "again", "--num_train_epochs", "0",
                               files={"validation": files["validation"]}) / "eval_results.json")
    assert results["eval_f1"] == again["eval_f1"]
    assert results["eval_loss"] == pytest.approx(again["eval_loss"], rel=1e-5)
    # ... and writes the scores and their reports, not a copy of the model, a model card or learning curves
    written = set(os.listdir(tmp_path / "again"))
    assert {"eval_results.json", "all_results.json", "errors_validation.json"} <= written
    assert not written & {"model.safetensors", "config.json", "tokenizer.json", "README.md", "learning_curves.png",
                          "train_results.json"}


def custom_code_model(tiny_bert, folder):
    """The tiny BERT as a model whose classes come from code in its folder (needs --trust_remote_code)."""
    shutil.copytree(tiny_bert, folder)
    (folder / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyConfig(BertConfig):\n    model_type = 'nerkit-tiny'\n")
    (folder / "modeling_tiny.py").write_text(
        "from transformers import BertForTokenClassification\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
        "class TinyForTokenClassification(BertForTokenClassification):\n    config_class = TinyConfig\n")
    config = read_json(folder / "config.json")
    config.update(model_type="nerkit-tiny", architectures=["TinyForTokenClassification"], auto_map={
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModelForTokenClassification": "modeling_tiny.TinyForTokenClassification"})
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_load_best_model_at_end_keeps_and_names_the_best_epoch(tiny_bert, files, tmp_path, monkeypatch, caplog):
    model = custom_code_model(tiny_bert, tmp_path / "custom")
    loads, passes = [], []
    real_load, real_forward = AutoModelForTokenClassification.from_pretrained, run_ner_no_trainer.forward_batches
    monkeypatch.setattr(AutoModelForTokenClassification, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(run_ner_no_trainer, "forward_batches", lambda *a: passes.append(a) or real_forward(*a))
    caplog.set_level(logging.INFO, logger="run_ner_no_trainer")
    output = run_loop(model, tmp_path / "o", "--num_train_epochs", "2", "--checkpointing_steps", "epoch",
                      "--trust_remote_code", "--load_best_model_at_end", *NO_LATER_IMPROVEMENT, files=files)
    assert len(loads) == 1  # the kept weights went back into the model: no second model loaded
    assert len(passes) == 3  # validation after each epoch, then the test split; no extra validation pass
    assert "Saved the model of epoch 1 of 2" in caplog.text
    results = read_json(output / "all_results.json")
    assert results["epoch"] == 2.0 and results["best_epoch"] == 1.0
    assert same_weights(weights(output), weights(output / "epoch_0"))
    # best_* are the saved model's scores, eval_* the last epoch's; the test split is predicted by the saved model
    monkeypatch.undo()
    again = run_loop(str(output), tmp_path / "again", "--num_train_epochs", "0", "--trust_remote_code", files=files)
    assert results["best_eval_f1"] == read_json(again / "eval_results.json")["eval_f1"]
    assert results["best_eval_loss"] == pytest.approx(read_json(again / "eval_results.json")["eval_loss"], rel=1e-5)
    assert results["eval_loss"] != pytest.approx(results["best_eval_loss"], rel=1e-5)
    assert predictions(output) == predictions(again)


def test_a_model_with_its_own_code_is_used_only_when_allowed_and_its_card_says_so(tiny_bert, files, tmp_path):
    import predict_ner

    model = custom_code_model(tiny_bert, tmp_path / "custom")
    allow = "add --trust_remote_code if you trust that code"
    with pytest.raises(UserError, match=f"'{model}' comes with its own model code .*: {allow}"):
        run_loop(model, tmp_path / "refused", "--num_train_epochs", "1", files=files)
    output = run_loop(model, tmp_path / "o", "--num_train_epochs", "1", "--trust_remote_code", files=files)
    card = (output / "README.md").read_text()
    assert 'aggregation_strategy="first", trust_remote_code=True)' in card
    assert "predict_ner.py --model PATH_TO_THIS_FOLDER --trust_remote_code --input texts.txt" in card
    text = tmp_path / "texts.txt"
    text.write_text("John Smith lives in Paris\n", encoding="utf-8")
    tag = ["--model", str(output), "--input", str(text), "--output", str(tmp_path / "out.jsonl"), "--words"]
    with pytest.raises(UserError, match=allow):
        predict_ner.main(predict_ner.parse_options(tag))
    predict_ner.main(predict_ner.parse_options(tag + ["--trust_remote_code"]))
    assert len(json.loads((tmp_path / "out.jsonl").read_text())["labels"]) == 5


def test_resumed_run_stops_and_counts_time_like_an_uninterrupted_one(tiny_bert, files, tmp_path, monkeypatch):
    common = ["--num_train_epochs", "5", "--checkpointing_steps", "epoch", "--load_best_model_at_end",
              "--early_stopping_patience", "2", *NO_LATER_IMPROVEMENT]
    data = {"train": files["train"], "validation": files["validation"]}
    whole = run_loop(tiny_bert, tmp_path / "whole", *common, files=data)
    assert read_json(whole / "train_results.json")["epoch"] == 3.0  # the first epoch, then 2 without improvement
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "epoch_1", resumed / "epoch_1")
    with monkeypatch.context() as patched:  # without the best epoch's model beside it: refused before loading
        patched.setattr(run_ner_no_trainer, "load_model", refuse_to_load)
        with pytest.raises(UserError, match="the model of the best epoch so far was saved in the output folder of"):
            run_loop(tiny_bert, resumed, *common, "--resume_from_checkpoint", "latest", files=data)
    for name in ("config.json", "model.safetensors"):  # the best (first) epoch's model, saved when it was scored
        shutil.copy(whole / name, resumed)
    state = read_json(resumed / "epoch_1" / "loop_state.json")  # after 2 epochs, one without improvement
    state["train_seconds"] = 1000.0  # as if those 2 epochs had taken 1000 seconds
    (resumed / "epoch_1" / "loop_state.json").write_text(json.dumps(state))
    run_loop(tiny_bert, resumed, *common, "--resume_from_checkpoint", "latest", files=data)
    assert not (resumed / "epoch_3").exists()
    trained, resumed_results = read_json(whole / "train_results.json"), read_json(resumed / "train_results.json")
    assert resumed_results["epoch"] == trained["epoch"] == 3.0
    assert resumed_results["train_runtime"] >= 1000.0  # the time before the resume counts
    assert read_json(resumed / "eval_results.json")["best_eval_f1"] == read_json(whole / "eval_results.json")[
        "best_eval_f1"]
    assert same_weights(weights(resumed), weights(whole))


def test_early_stopping_needs_load_best_model_at_end(tiny_bert, files, tmp_path):
    result = script("--model_name_or_path", tiny_bert, "--train_file", files["train"], "--validation_file",
                    files["validation"], "--output_dir", str(tmp_path / "o"), "--early_stopping_patience", "2")
    assert result.returncode == 2 and "--load_best_model_at_end" in result.stderr
    assert not (tmp_path / "o").exists()


def test_report_to_none_tracks_nothing_and_an_unknown_tracker_is_refused(tiny_bert, files, tmp_path):
    run_loop(tiny_bert, tmp_path / "none", "--num_train_epochs", "1", "--with_tracking", "--report_to", "none",
             files=files)
    assert (tmp_path / "none" / "all_results.json").is_file() and not (tmp_path / "none" / "ner_no_trainer").exists()
    with pytest.raises(UserError, match="'tensorbored' is not a tracker accelerate knows"):
        run_loop(tiny_bert, tmp_path / "typo", "--with_tracking", "--report_to", "tensorbored", files=files)
    assert not (tmp_path / "typo").exists()


def test_push_to_hub_without_training_is_refused_before_anything_loads(tiny_bert, files, tmp_path):
    with pytest.raises(UserError, match="--push_to_hub with --num_train_epochs 0"):
        run_loop(tiny_bert, tmp_path / "o", "--num_train_epochs", "0", "--push_to_hub",
                 files={"validation": files["validation"]})
    assert not (tmp_path / "o").exists()


def test_report_to_without_with_tracking_is_told_to_track_nothing(tiny_bert, files, tmp_path, caplog):
    """Upstream's loop reads --report_to only with --with_tracking; a tracker named without it is told."""
    caplog.set_level(logging.INFO)
    run_loop(tiny_bert, tmp_path / "o", "--num_train_epochs", "0", "--report_to", "tensorboard",
             files={"validation": files["validation"]})
    told = [record for record in caplog.records if "--report_to tensorboard is read only with --with_tracking" in
            record.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING
    assert not (tmp_path / "o" / "ner_no_trainer").exists()  # the tracker's log folder: nothing was tracked
    caplog.clear()
    run_loop(tiny_bert, tmp_path / "default", "--num_train_epochs", "0", files={"validation": files["validation"]})
    assert not any("--with_tracking" in record.getMessage() for record in caplog.records)


def test_the_saved_model_line_names_validation_only_where_there_is_one(caplog):
    caplog.set_level(logging.INFO)
    args = run_ner_no_trainer.LoopArguments(output_dir="out")
    run_ner_no_trainer.log_saved_model(run_ner_no_trainer.LoopState(completed_steps=2, epoch=1), args, False, 2)
    assert caplog.messages[-1] == "Saved the model of the last epoch, 1."
    run_ner_no_trainer.log_saved_model(run_ner_no_trainer.LoopState(completed_steps=2, epoch=1), args, True, 2)
    assert "--load_best_model_at_end" in caplog.messages[-1]
    # --max_train_steps 6 of 4 steps an epoch: the second epoch is half trained
    run_ner_no_trainer.log_saved_model(run_ner_no_trainer.LoopState(completed_steps=6, epoch=2), args, False, 4)
    assert caplog.messages[-1] == "Saved the model of the last epoch, 1.5."


def test_a_checkpoint_the_run_stopped_writing_is_skipped_with_a_warning(tmp_path, caplog):
    """loop_state.json is written last: a checkpoint without it was cut short (kill -9 while saving), as
    run_ner.py says of its own."""
    for name, state in (("step_10", '{"completed_steps": 10}'), ("step_20", None), ("step_30", "{")):
        (tmp_path / name).mkdir()
        if state is not None:
            (tmp_path / name / "loop_state.json").write_text(state, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert run_ner_no_trainer.checkpoints_in(str(tmp_path)) == [str(tmp_path / "step_10")]
    assert f"Skipping the incomplete checkpoint {tmp_path / 'step_20'} (no loop_state.json)" in caplog.text
    assert f"Skipping the checkpoint {tmp_path / 'step_30'}: its loop_state.json cannot be read" in caplog.text


def test_best_epoch_counts_the_epochs_trained_when_an_epoch_was_cut_short():
    """--max_train_steps 50 with 20 steps an epoch: the third epoch ends after half its steps, at 2.5
    epochs, which is what `epoch` and `best_epoch` say when that evaluation is the best."""
    history = [{"epoch": k, "step": step, "loss": 1.0 / k, "eval_f1": f1}
               for k, step, f1 in ((1, 20, 0.5), (2, 40, 0.6), (3, 50, 0.7))]
    state = run_ner_no_trainer.LoopState(completed_steps=50, epoch=3, best_f1=0.7, best_epoch=3, history=history)
    run = SimpleNamespace(loaders={"train": [None] * 20}, splits={"train": SimpleNamespace(tokens=[["a"]] * 20)},
                          args=SimpleNamespace(gradient_accumulation_steps=1, load_best_model_at_end=True))
    train_results, eval_results = run_ner_no_trainer.final_results(run, state)
    assert train_results["epoch"] == eval_results["epoch"] == eval_results["best_epoch"] == 2.5
    state.best_epoch = 1
    assert run_ner_no_trainer.final_results(run, state)[1]["best_epoch"] == 1.0


def test_the_epoch_line_names_the_best_epoch_the_run_keeps():
    """With --early_stopping_threshold 0.2 a higher F1 short of the threshold does not replace the kept
    epoch: the line names the kept one, as the saved-model line and eval_results.json's best_* do."""
    from nerkit.progress import progress_line

    state = run_ner_no_trainer.LoopState(completed_steps=12, epoch=3, best_f1=0.0708, best_epoch=1, history=[
        {"epoch": 1, "step": 4, "eval_f1": 0.0708}, {"epoch": 2, "step": 8, "eval_f1": 0.0671},
        {"epoch": 3, "step": 12, "eval_f1": 0.0961}])
    best = run_ner_no_trainer.best_so_far(state, 4)
    assert best == (1.0, 0.0708, "F1")
    line = progress_line(3.0, {"eval_f1": 0.0961}, best=best)
    assert line == "epoch 3: F1 0.0961, best F1 0.0708 (epoch 1)"
    assert run_ner_no_trainer.best_so_far(run_ner_no_trainer.LoopState(), None) is None


def test_an_evaluation_only_run_says_its_new_head_is_untrained_and_chooses_nothing_for_training(tiny_bert, files,
                                                                                                tmp_path, caplog):
    # --num_train_epochs 0 with a training file given: the data is read, but nothing trains
    with caplog.at_level(logging.INFO):
        run_loop(tiny_bert, tmp_path, "--num_train_epochs", "0", files=files)
    assert "New weights, initialised at random and not trained by this run: classifier.bias" in caplog.text
    assert "trained here" not in caplog.text
    assert not [line for line in caplog.messages if line.startswith("Training ")]
    assert "Test scores:\n" in caplog.text  # the labelled test split's table, as run_ner.py logs it
