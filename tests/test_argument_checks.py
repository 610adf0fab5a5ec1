"""Flag values and paths that failed with a traceback, most after the model had loaded: each is now refused
before any weights load and before the output folder is touched, as one paragraph naming the flag, with
exit status 2 and no traceback."""

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch

import predict_ner
import run_ner
import run_ner_no_trainer
from conftest import ROOT
from nerkit.errors import UserError
from nerkit.outputs import write_atomic

SCRIPTS = {"run_ner.py": run_ner, "run_ner_no_trainer.py": run_ner_no_trainer}


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a training script loads model weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was refused")

    for module in SCRIPTS.values():
        monkeypatch.setattr(module, "load_model", refuse)


def command(script, *argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def training_argv(script, model, ner_files, output_dir, *flags):
    argv = ["--model_name_or_path", model, "--train_file", ner_files["train"], "--validation_file",
            ner_files["validation"], "--output_dir", str(output_dir), *flags]
    if script == "run_ner.py":
        argv += ["--test_file", ner_files["test"], "--do_train", "--do_eval", "--do_predict", "--report_to", "none"]
    return argv


def refused(script, argv):
    with pytest.raises(UserError) as error:
        SCRIPTS[script].cli(argv)
    return str(error.value)


def folder_contents(folder):
    return {name: open(os.path.join(folder, name), encoding="utf-8").read() for name in sorted(os.listdir(folder))}


BAD_NUMBERS = [
    ("--per_device_train_batch_size", "0"),
    ("--per_device_eval_batch_size", "0"),
    ("--gradient_accumulation_steps", "0"),
    ("--max_train_samples", "0"),
    ("--max_eval_samples", "0"),
    ("--max_predict_samples", "0"),
    ("--learning_rate", "-1"),
    ("--learning_rate", "0"),
    ("--num_train_epochs", "-1"),
    ("--preprocessing_num_workers", "-1"),
    ("--seed", "-1"),
    ("--max_grad_norm", "-1"),  # the loop's clipping step would flip every gradient
    ("--max_grad_norm", "nan"),
    ("--weight_decay", "-0.01"),
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag, value", BAD_NUMBERS)
def test_bad_numbers_are_refused_before_the_earlier_results_are_touched(script, flag, value, tiny_bert, ner_files,
                                                                        tmp_path, no_weights):
    """With --overwrite_output_dir a run removes the earlier run's results before training: a bad flag must
    stop it first."""
    output = tmp_path / "out"
    output.mkdir()
    for name in ("train_results.json", "eval_results.json", "all_results.json"):
        (output / name).write_text('{"f1": 0.5}\n', encoding="utf-8")
    before = folder_contents(output)
    message = refused(script, training_argv(script, tiny_bert, ner_files, output, "--overwrite_output_dir",
                                            flag, value))
    assert message.startswith(f"{flag} must be") and value in message
    assert folder_contents(output) == before


@pytest.mark.parametrize("script, flag, value", [
    ("run_ner.py", "--adam_beta1", "1"), ("run_ner.py", "--adam_beta2", "-0.1"), ("run_ner.py", "--adam_epsilon", "-1"),
    ("run_ner.py", "--label_smoothing_factor", "1"), ("run_ner.py", "--dataloader_num_workers", "-1"),
    ("run_ner_no_trainer.py", "--num_warmup_steps", "-5"),
])
def test_one_scripts_optimizer_numbers_are_refused_before_any_weights_load(script, flag, value, tiny_bert, ner_files,
                                                                            tmp_path, no_weights):
    message = refused(script, training_argv(script, tiny_bert, ner_files, tmp_path / "out", flag, value))
    assert message.startswith(f"{flag} must be") and value in message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, flags, said", [
    ("run_ner.py", ["--lr_scheduler_type", "cosine_with_min_lr"], "with --lr_scheduler_kwargs as JSON (for example "
                                                                  "'{\"min_lr_rate\": 0.1}')"),
    ("run_ner.py", ["--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"min_lr": 1e-6}'],
     "unexpected keyword argument 'min_lr'"),
    ("run_ner_no_trainer.py", ["--lr_scheduler_type", "warmup_stable_decay"], "has no --lr_scheduler_kwargs"),
    ("run_ner_no_trainer.py", ["--lr_scheduler_type", "reduce_lr_on_plateau"], "steps on the validation loss"),
])
def test_a_scheduler_that_cannot_be_built_is_refused_before_any_weights_load(script, flags, said, tiny_bert, ner_files,
                                                                             tmp_path, no_weights):
    message = refused(script, training_argv(script, tiny_bert, ner_files, tmp_path / "out", *flags))
    assert message.startswith(f"--lr_scheduler_type {flags[1]} ") and said in message, message
    assert not (tmp_path / "out").exists()


def test_a_scheduler_with_its_settings_passes_the_check():
    from types import SimpleNamespace

    from nerkit.arguments import check_scheduler

    check_scheduler(SimpleNamespace(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}))
    check_scheduler(SimpleNamespace(lr_scheduler_type="linear"))  # the loop's arguments have no settings


def test_an_optimizer_whose_package_is_missing_is_refused_before_the_earlier_results_go(tiny_bert, ner_files,
                                                                                          tmp_path, no_weights):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    output = tmp_path / "out"
    output.mkdir()
    (output / "all_results.json").write_text('{"f1": 0.5}\n', encoding="utf-8")
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, output, "--overwrite_output_dir",
                                                  "--optim", "adamw_bnb_8bit"))
    assert "--optim adamw_bnb_8bit needs a package that is not installed" in message and "bitsandbytes" in message
    assert folder_contents(output) == {"all_results.json": '{"f1": 0.5}\n'}


@pytest.mark.parametrize("flags, package, said", [
    (["--report_to", "wandb"], "wandb", "--report_to wandb: not installed here (pip install wandb)"),
    (["--deepspeed", "ds_config.json"], "deepspeed", "The arguments need a package that is not installed"),
])
def test_a_flag_whose_package_is_missing_is_refused_before_any_weights_load(flags, package, said, tiny_bert, ner_files,
                                                                            tmp_path, no_weights, monkeypatch):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds_config.json").write_text('{"train_micro_batch_size_per_gpu": "auto"}', encoding="utf-8")
    argv = training_argv("run_ner.py", tiny_bert, ner_files, tmp_path / "out") + flags  # the last --report_to wins
    message = refused("run_ner.py", argv)
    assert said in message and package in message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--fp16", "--bf16=true"])
def test_the_loop_answers_the_trainers_precision_flags_with_accelerate_launch(flag, tiny_bert, ner_files, tmp_path):
    message = refused("run_ner_no_trainer.py", training_argv("run_ner_no_trainer.py", tiny_bert, ner_files,
                                                             tmp_path / "out", flag))
    assert message.startswith(f"{flag.split('=')[0]}: run_ner_no_trainer.py takes its precision from `accelerate "
                              "launch --mixed_precision")


@pytest.mark.parametrize("flag, value, rule", [("--checkpointing_steps", "0", "1 or more"),
                                               ("--max_train_steps", "0", "1 or more")])
def test_the_loops_own_step_counts_are_refused(flag, value, rule, tiny_bert, ner_files, tmp_path, no_weights):
    message = refused("run_ner_no_trainer.py", training_argv("run_ner_no_trainer.py", tiny_bert, ner_files,
                                                             tmp_path / "out", flag, value))
    assert flag in message and rule in message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_number_on_the_command_line_exits_2_in_one_paragraph(script, tiny_bert, ner_files, tmp_path):
    result = command(script, *training_argv(script, tiny_bert, ner_files, tmp_path / "out",
                                            "--per_device_train_batch_size", "0"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == "error: --per_device_train_batch_size must be 1 or more, got 0.\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("check_data", [False, True])
def test_output_dir_that_is_a_file_is_refused(script, check_data, tiny_bert, ner_files, tmp_path, no_weights):
    existing = tmp_path / "results"
    existing.write_text("keep me\n", encoding="utf-8")
    flags = ["--check_data"] if check_data else []
    message = refused(script, training_argv(script, tiny_bert, ner_files, existing, *flags))
    assert f"--output_dir {existing} is a file, not a folder" in message
    message = refused(script, training_argv(script, tiny_bert, ner_files, existing / "run", *flags))
    assert f"{existing} is a file, not a folder" in message and "--output_dir" in message
    assert existing.read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_output_dir_this_user_cannot_write_is_refused(script, tiny_bert, ner_files, tmp_path, no_weights,
                                                         monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # root may write anywhere, so the permission is refused here instead
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(locked) and real_access(path, mode))
    message = refused(script, training_argv(script, tiny_bert, ner_files, locked))
    assert f"--output_dir {locked} cannot be written to by this user" in message
    message = refused(script, training_argv(script, tiny_bert, ner_files, locked / "run"))
    assert f"cannot be created: {locked} is not writable by this user" in message
    assert not (locked / "run").exists()


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_refused(tiny_bert, ner_files, tmp_path, no_weights):
    folder = tmp_path / "not-a-checkpoint"
    folder.mkdir()
    (folder / "notes.txt").write_text("x\n", encoding="utf-8")
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, tmp_path / "out",
                                                  "--resume_from_checkpoint", str(folder)))
    assert f"--resume_from_checkpoint {folder} is not a complete checkpoint" in message
    assert "trainer_state.json" in message and not (tmp_path / "out").exists()


def test_resuming_a_checkpoint_trained_for_other_labels_is_refused(tiny_bert, ner_files, tmp_path, no_weights):
    checkpoint = tmp_path / "earlier" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2, "max_steps": 10}', encoding="utf-8")
    torch.save({}, checkpoint / "optimizer.pt")  # a whole archive: a damaged one is refused first
    (checkpoint / "config.json").write_text(json.dumps({"id2label": {"0": "B-MISC", "1": "O"}}), encoding="utf-8")
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, tmp_path / "out",
                                                  "--resume_from_checkpoint", str(checkpoint)))
    assert f"The checkpoint {checkpoint} was trained for 2 labels (B-MISC, O), but this run's data give" in message
    assert not (tmp_path / "out").exists()


def test_resuming_a_checkpoint_of_another_model_is_refused_before_its_weights_load(tiny_bert, tiny_roberta, ner_files,
                                                                                  tmp_path, no_weights):
    output = tmp_path / "out"
    checkpoint = output / "checkpoint-2"  # a run stopped at a checkpoint, run again with another model
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2, "max_steps": 10}', encoding="utf-8")
    torch.save({}, checkpoint / "optimizer.pt")  # a whole archive: a damaged one is refused first
    shutil.copy(os.path.join(tiny_roberta, "config.json"), checkpoint / "config.json")
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, output))
    assert f"The checkpoint {checkpoint} was trained from another model than --model_name_or_path {tiny_bert} " \
           "(model_type roberta against bert" in message
    assert sorted(os.listdir(output)) == ["checkpoint-2"]

def test_the_loop_tells_a_finished_run_from_one_to_resume(tiny_bert, ner_files, tmp_path, no_weights):
    output = tmp_path / "out"
    (output / "step_1").mkdir(parents=True)
    (output / "step_1" / "loop_state.json").write_text('{"completed_steps": 1}', encoding="utf-8")
    message = refused("run_ner_no_trainer.py", training_argv("run_ner_no_trainer.py", tiny_bert, ner_files, output))
    assert "It holds checkpoints: add --resume_from_checkpoint latest to continue" in message
    (output / "train_results.json").write_text('{"train_loss": 0.5}', encoding="utf-8")
    message = refused("run_ner_no_trainer.py", training_argv("run_ner_no_trainer.py", tiny_bert, ner_files, output))
    assert "It holds a finished run (train_results.json)" in message and "--resume_from_checkpoint" not in message


@pytest.fixture
def unnamed_head(tiny_bert, tmp_path):
    """A token-classification checkpoint whose 3 labels have no names (LABEL_0, ...)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tmp_path / "unnamed-head"
    AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unnamed_head_of_another_size_is_refused_before_its_weights_load(script, unnamed_head, ner_files,
                                                                           tmp_path, no_weights):
    message = refused(script, training_argv(script, unnamed_head, ner_files, tmp_path / "out"))
    assert f"The classification head of {unnamed_head} has 3 labels without names (LABEL_0, ...)" in message
    assert "Add --ignore_mismatched_sizes" in message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_model_label_with_whitespace_is_refused_before_its_weights_load(script, tiny_bert, ner_files, tmp_path,
                                                                          no_weights):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tmp_path / "spaced-labels"
    names = {0: "O", 1: "B-PER NAME", 2: "I-PER"}
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, id2label=names,
                                                            label2id={v: k for k, v in names.items()})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    message = refused(script, training_argv(script, str(folder), ner_files, tmp_path / "out"))
    assert "names a label 'B-PER NAME' in its config.json" in message and "'B-PER_NAME'" in message


def test_an_unnamed_heads_size_is_read_from_a_sharded_checkpoint_too(tiny_bert, tmp_path):
    from transformers import AutoModelForTokenClassification

    from nerkit.modeling import saved_head_size

    folder = tmp_path / "sharded"
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    model.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    assert saved_head_size(str(folder)) == 3


def test_an_unnamed_heads_size_is_read_from_a_legacy_pytorch_checkpoint(tiny_bert, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification

    from nerkit.modeling import saved_head_size

    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    legacy = tmp_path / "legacy"  # transformers 5 writes safetensors only; older hub models hold this file
    legacy.mkdir()
    model.config.save_pretrained(legacy)
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")
    assert saved_head_size(str(legacy)) == 3
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("classifier.")}
    torch.save(state, legacy / "pytorch_model.bin")
    assert saved_head_size(str(legacy)) is None  # a base model's checkpoint: its head is new


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_folder_given_as_data_file_is_called_a_folder(script, tiny_bert, ner_files, tmp_path, no_weights):
    argv = training_argv(script, tiny_bert, ner_files, tmp_path / "out")
    argv[argv.index("--train_file") + 1] = str(tmp_path)
    message = refused(script, argv)
    assert f"The data file {tmp_path} is a folder, not a file" in message and "--train_file" in message


@pytest.mark.parametrize("script", SCRIPTS)
def test_dataset_name_with_data_files_is_refused(script, tiny_bert, ner_files, tmp_path, no_weights):
    message = refused(script, training_argv(script, tiny_bert, ner_files, tmp_path / "out",
                                            "--dataset_name", "conll2003"))
    assert "--dataset_name conll2003 and --train_file/--validation_file" in message
    assert "Drop --dataset_name" in message and not (tmp_path / "out").exists()


ARGPARSE_ERRORS = [  # (training scripts' flags, predict_ner.py's flags, expected in the message)
    (["--num_train_epochs", "abc"], ["--batch_size", "abc"], "invalid"),
    (["--file_format", "bogus"], ["--format", "bogus"], "invalid choice: 'bogus'"),
    (["--no_such_flag", "1"], ["--no_such_flag", "1"], "--no_such_flag 1"),
]


@pytest.mark.parametrize("script", [*SCRIPTS, "predict_ner.py"])
@pytest.mark.parametrize("training_flags, predict_flags, expected", ARGPARSE_ERRORS)
def test_argparse_errors_are_one_paragraph(script, training_flags, predict_flags, expected, tiny_bert, ner_files,
                                           tmp_path):
    with pytest.raises(UserError) as error:
        if script == "predict_ner.py":
            predict_ner.parse_options(["--model", tiny_bert, *predict_flags])
        else:
            SCRIPTS[script].cli(training_argv(script, tiny_bert, ner_files, tmp_path / "out", *training_flags))
    message = str(error.value)
    flag = predict_flags[0] if script == "predict_ner.py" else training_flags[0]
    assert flag in message and expected in message and "usage:" not in message and "\n" not in message
    assert message.endswith("Run with --help to see all flags.")


@pytest.mark.parametrize("script", [*SCRIPTS, "predict_ner.py"])
def test_argparse_error_on_the_command_line_exits_2_without_the_usage(script, tiny_bert, ner_files, tmp_path):
    if script == "predict_ner.py":
        result = command(script, "--model", tiny_bert, "--batch_size", "abc")
    else:
        result = command(script, *training_argv(script, tiny_bert, ner_files, tmp_path / "out",
                                                "--num_train_epochs", "abc"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: Argument --") and "invalid" in result.stderr
    assert result.stderr.endswith("Run with --help to see all flags.\n") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "0"], "--batch_size must be 1 or more, got 0."),
    (["--per_device_eval_batch_size", "-2"], "--batch_size must be 1 or more, got -2."),
    (["--stride", "-3"], "--stride must be 0 or more sub-tokens, got -3."),  # the training scripts' rule
])
def test_predict_ner_refuses_bad_numbers(flags, message):
    with pytest.raises(UserError, match=message):
        predict_ner.parse_options(["--model", "m", *flags])


def test_predict_ner_refuses_an_output_folder(tiny_bert, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("Peter Blackburn reported from Brussels\n", encoding="utf-8")
    result = command("predict_ner.py", "--model", tiny_bert, "--input", str(source), "--output", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --output {tmp_path} is a folder") and "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["input.txt"]
    with pytest.raises(UserError, match=f"{source} is a file, not a folder"):
        predict_ner.parse_options(["--model", "m", "--output", str(source / "entities.jsonl")])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(str(tmp_path / "new.json"), "{}\n")
        with open(tmp_path / "reference.json", "w", encoding="utf-8") as handle:
            handle.write("{}\n")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(os.stat(tmp_path / "reference.json").st_mode)


def test_rewritten_files_keep_their_mode(tmp_path):
    path = tmp_path / "all_results.json"
    path.write_text("{}\n", encoding="utf-8")
    os.chmod(path, 0o640)
    write_atomic(str(path), '{"f1": 1.0}\n')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640 and path.read_text(encoding="utf-8") == '{"f1": 1.0}\n'
    assert os.listdir(tmp_path) == ["all_results.json"]


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("values, message", [
    # a float in run_ner.py (TrainingArguments), an int in the loop (as upstream's)
    ({"num_train_epochs": "three"}, 'number. Write it as a'),
    ({"num_train_epochs": "3"}, '"num_train_epochs": "3", which is not a'),
    ({"seed": 4.5}, '"seed": 4.5, which is not a whole number'),
    ({"learning_rate": None}, '"learning_rate": null, which is not a number'),
    ({"return_entity_level_metrics": "yes"}, '"return_entity_level_metrics": "yes", which is not true or false'),
    ({"seed": True}, '"seed": true, which is not a whole number'),
    ({"num_train_epoch": 3, "learning_rte": 1e-4}, "has keys that are no flag of this script: learning_rte, "
                                                   "num_train_epoch"),
])
def test_json_configuration_values_of_the_wrong_type_are_refused(script, values, message, tiny_bert, ner_files,
                                                                 tmp_path, no_weights):
    """The dataclasses take any value from a JSON file; a string epoch count failed only in training."""
    config = {"model_name_or_path": tiny_bert, "train_file": ner_files["train"], "output_dir": str(tmp_path / "o"),
              **({"do_train": True} if script == "run_ner.py" else {}), **values}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert message in refused(script, [str(path)])
    assert not (tmp_path / "o").exists()


def test_json_configuration_must_be_an_object(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps(["--do_train"]), encoding="utf-8")
    assert "holds list, not an object of arguments" in refused("run_ner.py", [str(path)])


def test_an_unnamed_heads_size_is_read_from_the_hub_cache_for_a_hub_id(unnamed_head, tmp_path):
    from nerkit.modeling import saved_head_size

    cache = tmp_path / "cache"  # the layout huggingface_hub downloads into
    snapshot = cache / "models--acme--ner" / "snapshots" / "0123abc"
    shutil.copytree(unnamed_head, snapshot)
    (cache / "models--acme--ner" / "refs").mkdir()
    (cache / "models--acme--ner" / "refs" / "main").write_text("0123abc", encoding="utf-8")
    assert saved_head_size("acme/ner", cache_dir=str(cache)) == 3
    assert saved_head_size("acme/other", cache_dir=str(cache)) is None  # not downloaded: loading will tell


@pytest.mark.parametrize("flags, said", [
    (["--bf16", "--fp16"], "--bf16 and --fp16 each ask for a precision: give one of them, or neither"),
    (["--load_best_model_at_end", "--metric_for_best_model", "f1"],
     "--eval_strategy is no and --save_strategy steps. Give both the same value"),
    pytest.param(["--bf16"], "To train in bf16 on the CPU add --use_cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="--bf16 alone trains on this GPU")),
])
def test_training_arguments_refusals_say_what_to_do(flags, said, tiny_bert, ner_files, tmp_path, no_weights):
    """TrainingArguments' own text names the problem (\"Your setup doesn't support bf16/gpu\") but not the fix."""
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, tmp_path / "out", *flags))
    assert said in message and "Invalid arguments" not in message and not (tmp_path / "out").exists()


def test_training_for_no_epoch_is_refused_in_run_ner_before_any_weights_load(tiny_bert, ner_files, tmp_path,
                                                                             no_weights):
    """Zero epochs trained no step and saved the pretrained model, its head untrained, as if trained."""
    message = refused("run_ner.py", training_argv("run_ner.py", tiny_bert, ner_files, tmp_path / "out",
                                                  "--num_train_epochs", "0"))
    assert "--do_train with --num_train_epochs 0 trains no step" in message and not (tmp_path / "out").exists()


def fake_checkpoint(script, folder, model):
    """A checkpoint folder of `script` that passes the checks made before the output folder's."""
    folder.mkdir(parents=True)
    if script == "run_ner.py":
        (folder / "trainer_state.json").write_text('{"global_step": 2, "max_steps": 10}', encoding="utf-8")
        torch.save({}, folder / "optimizer.pt")
    else:
        (folder / "loop_state.json").write_text('{"completed_steps": 2, "epoch": 0}', encoding="utf-8")
    shutil.copy(os.path.join(model, "config.json"), folder / "config.json")
    return folder


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("held", ["notes", "finished run"])
def test_resuming_a_checkpoint_from_elsewhere_into_a_used_output_dir_is_refused(script, held, tiny_bert, ner_files,
                                                                                 tmp_path, no_weights):
    """An explicit --resume_from_checkpoint wrote its run over whatever --output_dir held; a checkpoint of the
    run in --output_dir itself still continues that run."""
    name = "checkpoint-2" if script == "run_ner.py" else "step_2"
    checkpoint = fake_checkpoint(script, tmp_path / "earlier" / name, tiny_bert)
    output = tmp_path / "out"
    output.mkdir()
    (output / ("README.md" if held == "notes" else "train_results.json")).write_text("mine\n", encoding="utf-8")
    before = folder_contents(output)
    message = refused(script, training_argv(script, tiny_bert, ner_files, output, "--resume_from_checkpoint",
                                            str(checkpoint)))
    assert f"The output folder {output}" in message and "--overwrite_output_dir" in message
    assert f"resuming {checkpoint}" in message.lower() and folder_contents(output) == before
