"""Interrupted runs resume exactly, several processes score exactly, nothing leaks, bad losses stop."""

import contextlib
import os
import random
import stat
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainingArguments

import run_ner
from conftest import ROOT, examples, write_jsonl
from nerkit import outputs
from nerkit.decoding import reduce_logits
from nerkit.errors import UserError
from test_run_ner import predictions, read_json, run

# several processes on the CPU, also on a machine with GPUs: as on one without (CUDA_VISIBLE_DEVICES empty)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
SCORES = ("eval_precision", "eval_recall", "eval_f1", "eval_accuracy")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def command(script, *argv, launcher=None):
    return (launcher or [sys.executable]) + [os.path.join(ROOT, script), *argv]


def kill_after(cmd, marker, timeout=120):
    """Start `cmd`, SIGKILL it as soon as `marker` exists; returns whether it was still running then."""
    process = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not os.path.exists(marker) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return running


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability")
    return {"train": write_jsonl(folder / "train.json", examples(40)),
            "validation": write_jsonl(folder / "dev.json", examples(5, offset=1)),
            "test": write_jsonl(folder / "test.json", examples(7, offset=2))}


def run_ner_args(model, data, output_dir, *flags):
    return ["--model_name_or_path", model, "--train_file", data["train"], "--validation_file", data["validation"],
            "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "True", "--seed", "3",
            "--learning_rate", "5e-3", "--per_device_train_batch_size", "8", *flags]


def test_run_ner_killed_after_a_checkpoint_resumes_to_the_same_scores(tiny_bert, data, tmp_path):
    flags = ["--do_train", "--do_eval", "--num_train_epochs", "160", "--save_strategy", "steps", "--save_steps",
             "100", "--save_total_limit", "2"]
    subprocess.run(command("run_ner.py", *run_ner_args(tiny_bert, data, tmp_path / "whole", *flags)), env=ENV,
                   cwd=ROOT, check=True, capture_output=True)
    killed = tmp_path / "killed"
    assert kill_after(command("run_ner.py", *run_ner_args(tiny_bert, data, killed, *flags)),
                      killed / "checkpoint-100" / "trainer_state.json")
    assert not (killed / "eval_results.json").exists()
    # the same command again picks up the last complete checkpoint by itself
    result = subprocess.run(command("run_ner.py", *run_ner_args(tiny_bert, data, killed, *flags)), env=ENV,
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming training from" in result.stdout
    whole, resumed = read_json(tmp_path / "whole" / "eval_results.json"), read_json(killed / "eval_results.json")
    assert [resumed[key] for key in SCORES] == [whole[key] for key in SCORES]
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-4)


def test_no_trainer_killed_after_a_checkpoint_resumes_to_the_same_scores(tiny_bert, data, tmp_path):
    def args(output_dir, *extra):
        return ["--model_name_or_path", tiny_bert, "--train_file", data["train"], "--validation_file",
                data["validation"], "--test_file", data["test"], "--output_dir", str(output_dir), "--seed", "3",
                "--learning_rate", "5e-3", "--num_train_epochs", "160", "--checkpointing_steps", "100", *extra]

    subprocess.run(command("run_ner_no_trainer.py", *args(tmp_path / "whole")), env=ENV, cwd=ROOT, check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    assert kill_after(command("run_ner_no_trainer.py", *args(killed)), killed / "step_100" / "loop_state.json")
    result = subprocess.run(command("run_ner_no_trainer.py", *args(killed, "--resume_from_checkpoint", "latest")),
                            env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    whole, resumed = read_json(tmp_path / "whole" / "eval_results.json"), read_json(killed / "eval_results.json")
    assert [resumed[key] for key in SCORES] == [whole[key] for key in SCORES]
    assert predictions(killed) == predictions(tmp_path / "whole")


@pytest.fixture(scope="module")
def saved_model(tiny_bert, data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("saved")
    run_ner.cli(run_ner_args(tiny_bert, data, output_dir, "--do_train", "--num_train_epochs", "3",
                             "--save_strategy", "no"))
    return str(output_dir)


def evaluate_with(processes, script, model, data, output_dir):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    if script == "run_ner.py":
        argv = run_ner_args(model, data, output_dir, "--do_eval", "--do_predict", "--test_file", data["test"],
                            "--per_device_eval_batch_size", "2")
        launcher = torchrun if processes > 1 else None
    else:
        argv = ["--model_name_or_path", model, "--train_file", data["train"], "--validation_file", data["validation"],
                "--test_file", data["test"], "--output_dir", str(output_dir), "--num_train_epochs", "0",
                "--per_device_eval_batch_size", "2"]
        launcher = torchrun if processes > 1 else None
    result = subprocess.run(command(script, *argv, launcher=launcher), env=ENV, cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Running on {processes} process(es)" in result.stdout  # really distributed, not two single runs
    return read_json(os.path.join(output_dir, "all_results.json")), predictions(output_dir)


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_two_processes_score_exactly_like_one(saved_model, data, tmp_path, script):
    # 5 validation and 7 test examples in batches of 2 over 2 processes: the last batches are uneven
    one_results, one_predictions = evaluate_with(1, script, saved_model, data, tmp_path / "one")
    two_results, two_predictions = evaluate_with(2, script, saved_model, data, tmp_path / "two")
    for key in SCORES + tuple(key.replace("eval_", "predict_") for key in SCORES):
        assert two_results[key] == one_results[key], key
    assert two_predictions == one_predictions and len(two_predictions) == 7
    # The loss is a mean of per-batch means, and the batches differ with two processes: close, not equal
    # (without a training step the Trainer once multiplied it by the number of processes)
    for key in ("eval_loss", "predict_loss"):
        assert two_results[key] == pytest.approx(one_results[key], rel=0.2), key


def train_one_epoch(script, model, data, output_dir, launcher):
    """One epoch of `script` on the 40 training examples under `launcher`, which must succeed; its log."""
    argv = ["--model_name_or_path", model, "--train_file", data["train"], "--output_dir", str(output_dir),
            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--seed", "3"]
    if script == "run_ner.py":
        argv += ["--do_train", "--report_to", "none", "--save_strategy", "no"]
    result = subprocess.run(command(script, *argv, launcher=launcher), env=ENV, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(os.path.join(output_dir, "train_results.json"))["train_samples"] == 40
    return result.stdout


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_accelerate_launch_multi_gpu_runs_two_processes_on_cpu(tiny_bert, data, tmp_path, script):
    # the README's command for several processes without GPUs, besides torchrun
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    assert "Running on 2 process(es)" in train_one_epoch(script, tiny_bert, data, tmp_path, launcher)
    # the card says how the run was launched, with upstream's keys for several processes
    card = (tmp_path / "README.md").read_text()
    assert "- distributed_type: multi-CPU\n- num_devices: 2\n- total_eval_batch_size: 16" in card
    assert "Trained as 2 processes (multi-CPU): launch the command with as many, `torchrun --nproc_per_node 2` (or " \
        "`accelerate launch --multi_gpu --num_processes 2`, which on CPUs needs --multi_gpu)" in card


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_a_model_with_parameters_no_step_uses_trains_on_two_processes(data, tmp_path, script):
    # Longformer's global-attention projections get no gradient without a global attention mask: DDP must look
    # for them at every step, or it stops at the second step (the loop's accelerate does not look by default)
    from tiny_models import build_tiny_longformer

    log = train_one_epoch(script, build_tiny_longformer(tmp_path / "longformer"), data, tmp_path / "out", TORCHRUN)
    assert "DDP looks for unused parameters at every step: longformer.encoder.layer.0.attention.self.query_global" \
        in log


def test_two_process_training_on_cpu(tiny_bert, data, tmp_path):
    flags = ["--do_train", "--do_eval", "--num_train_epochs", "2", "--save_strategy", "no", "--learning_rate", "1e-9"]
    argv = run_ner_args(tiny_bert, data, tmp_path, *flags)
    result = subprocess.run(command("run_ner.py", *argv, launcher=TORCHRUN), env=ENV, cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(tmp_path / "train_results.json")["train_samples"] == 40
    # 40 examples, 8 per device on 2 processes: 3 optimizer steps an epoch (one process would take 5)
    assert read_json(tmp_path / "trainer_state.json")["global_step"] == 6
    # every parameter gets a gradient: DDP was built without looking for unused ones (it warns on each process
    # when told to look and finds none, as the Trainer tells it for every transformers model)
    assert "Every trainable parameter gets a gradient" in result.stdout
    assert "find_unused_parameters=True was specified" not in result.stderr
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
    # the losses of the untrained model (learning rate 1e-9) are the one-process run's, not scaled by the number
    # of processes (transformers 5 doubled them for BERT's head, whose loss is a plain mean)
    run_ner.cli(run_ner_args(tiny_bert, data, tmp_path / "one", *flags))
    for key in ("train_loss", "eval_loss"):
        assert read_json(tmp_path / "all_results.json")[key] == pytest.approx(
            read_json(tmp_path / "one" / "all_results.json")[key], rel=0.05), key


SHUFFLE_PROBE = """
import json
import os
import sys
import torch
from torch.utils.data import DataLoader
import run_ner_no_trainer as loop

model_args, data_args, args, _ = loop.parse_command_line(sys.argv[1:])
accelerator, _ = loop.make_accelerator(args, data_args)
# shuffled as make_dataloaders does: a generator of its own
loader = accelerator.prepare(DataLoader(list(range(16)), shuffle=True, batch_size=1,
                                        generator=torch.Generator().manual_seed(0)))
seen = [[int(batch) for batch in loader] for epoch in range(2)]
# a file per process: lines printed by two processes into one pipe can run into each other
with open(os.path.join(args.output_dir, f"seen-{accelerator.process_index}.json"), "w") as handle:
    json.dump(seen, handle)
"""


@pytest.mark.parametrize("seed", [[], ["--seed", "7"]], ids=["no seed", "seed"])
def test_loop_processes_share_one_shuffle(tmp_path, seed):
    """Each process of the loop trains on its own share of every epoch's examples, with or without --seed."""
    probe = tmp_path / "probe.py"
    probe.write_text(SHUFFLE_PROBE)
    argv = ["--model_name_or_path", "unused", "--train_file", "unused.json", "--output_dir", str(tmp_path), *seed]
    result = subprocess.run([*TORCHRUN, str(probe), *argv], env=dict(ENV, PYTHONPATH=os.pathsep.join([ROOT, *filter(None, [ENV.get("PYTHONPATH")])])), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (read_json(tmp_path / f"seen-{process}.json") for process in (0, 1))
    for epoch in (0, 1):
        assert sorted(first[epoch] + second[epoch]) == list(range(16))
    assert first[0] != first[1]  # and a new order each epoch


def test_same_seed_same_scores_and_predictions(tiny_bert, data, tmp_path):
    runs = []
    for name in ("first", "second"):
        output = run(tiny_bert, tmp_path / name, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs",
                     "2", files=data)
        runs.append((read_json(output / "eval_results.json")["eval_f1"],
                     read_json(output / "eval_results.json")["eval_loss"], predictions(output)))
    assert runs[0] == runs[1]


def test_result_files_and_predictions_are_written_whole(tiny_bert, data, tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def recording_replace(source, target):
        renamed.append(os.path.basename(target))
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", recording_replace)
    run(tiny_bert, tmp_path, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "1", files=data)
    for name in ("train_results.json", "eval_results.json", "predict_results.json", "all_results.json",
                 "predictions.txt", "predictions.jsonl"):
        assert name in renamed, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "predictions.txt"
    target.write_text("old\n")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OSError):
        outputs.write_atomic(str(target), "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["predictions.txt"]


def in_a_process(code, tmp_path, **kwargs):
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), **kwargs)


KILLED_WHILE_WRITING = """
import os, signal
from nerkit import outputs
from nerkit.errors import exit_on_user_error

real = outputs.staged_copy

def staged(path, text):  # {signal} once the first file is written, while the second is
    if path.endswith("b.txt"):
        os.kill(os.getpid(), signal.{signal})
    return real(path, text)

outputs.staged_copy = staged
exit_on_user_error(outputs.write_together, {{"a.txt": "new", "b.txt": "new"}})
"""


@pytest.mark.parametrize("signal_name, status, said", [("SIGINT", 130, "Interrupted."), ("SIGTERM", 143, "Terminated.")])
def test_files_written_together_are_all_or_none_when_the_process_is_stopped(tmp_path, signal_name, status, said):
    """predictions.txt and predictions.jsonl of two runs side by side; SIGTERM (kill, timeout) left the
    temporary files of what was being written."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    result = in_a_process(KILLED_WHILE_WRITING.format(signal=signal_name), tmp_path)
    assert (result.returncode, result.stderr) == (status, f"{said}\n")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "old"


def test_a_full_disk_is_one_paragraph_and_leaves_nothing_half_written(tmp_path):
    import resource

    (tmp_path / "big.txt").write_text("old")
    code = ("from nerkit import outputs\nfrom nerkit.errors import exit_on_user_error\n"
            "exit_on_user_error(outputs.write_atomic, 'big.txt', 'x' * 100000)")
    result = in_a_process(code, tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                                 (4096, 4096)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: A file could not be written, as the disk is full or a limit on file "
                                    "size or quota is reached ([Errno 27] File too large)")
    assert os.listdir(tmp_path) == ["big.txt"] and (tmp_path / "big.txt").read_text() == "old"


def test_what_a_full_disk_says_through_the_libraries_is_known():
    from safetensors import SafetensorError

    from nerkit.errors import no_room

    assert no_room(SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                   "\"No space left on device\" })"))
    assert no_room(RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: "
                                "PytorchStreamWriter failed writing file data/0: file write failed"))
    assert no_room(RuntimeError("basic_ios::clear: iostream error"))  # torch.save of an optimizer.pt
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise RuntimeError("saving failed") from error
    except RuntimeError as wrapped:
        assert no_room(wrapped)
    assert not no_room(OSError(2, "No such file or directory")) and not no_room(ValueError("bad"))


@pytest.mark.parametrize("stop, status, said", [("raise KeyboardInterrupt", 130, "Interrupted.\n"),
                                                ("os.kill(os.getpid(), signal.SIGTERM)", 143, "Terminated.\n")])
def test_ctrl_c_or_sigterm_while_the_libraries_import_is_one_line(stop, status, said):
    code = "import os, signal\nfrom nerkit.startup import quiet_interrupt_while_importing\n" \
           f"quiet_interrupt_while_importing()\n{stop}\nimport time; time.sleep(30)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT, WORLD_SIZE="1"))
    assert (result.returncode, result.stderr) == (status, said)


def test_a_picture_that_fails_to_save_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from nerkit.report import save_confusion_matrix

    def failing_savefig(self, path, **kwargs):
        with open(path, "wb") as half:
            half.write(b"\x89PNG half")
        raise OSError(27, "File too large")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OSError):
        save_confusion_matrix(str(tmp_path), [["B-PER", "O"]], [["B-PER", "O"]])
    assert os.listdir(tmp_path) == []


def test_a_link_is_written_through_and_a_pipe_written_to(tmp_path):
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    outputs.write_atomic(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"  # the link was replaced by a file, target kept
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    outputs.write_atomic(str(pipe), "through\n")
    assert os.read(reader, 100) == b"through\n" and stat.S_ISFIFO(os.stat(pipe).st_mode)
    os.close(reader)


def test_a_descriptor_of_the_process_is_written_as_it_is_open(tmp_path):
    """/dev/stdout of a process run with `>> app.log` is that file opened for appending: reopened by name it
    was emptied, or replaced by the rename; under `| cat` its link names no file, and writing it failed."""
    def write(path, **kwargs):
        code = f"from nerkit import outputs; outputs.write_atomic({path!r}, 'new\\n')"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, **kwargs)

    log = tmp_path / "app.log"
    log.write_text("earlier\n")
    for path in ("/dev/stdout", "/proc/self/fd/1"):
        with open(log, "a") as appended:
            write(path, stdout=appended)
        assert write(path, stdout=subprocess.PIPE).stdout == b"new\n"
    assert log.read_text() == "earlier\nnew\nnew\n"
    reader, writer = os.pipe()  # as bash's >(command) hands one over: /dev/fd/63
    write(f"/dev/fd/{writer}", pass_fds=[writer])
    os.close(writer)
    assert os.read(reader, 100) == b"new\n"
    os.close(reader)


def test_tokens_never_reach_files_or_logs(tiny_bert, data, tmp_path):
    secrets = ("hf_modelSECRET123", "hf_hubSECRET456")
    trainer_run = subprocess.run(command("run_ner.py", *run_ner_args(
        tiny_bert, data, tmp_path / "trainer", "--do_train", "--do_eval", "--num_train_epochs", "1",
        "--save_strategy", "epoch", "--report_to", "tensorboard", "--token", secrets[0], "--hub_token", secrets[1])),
        env=ENV, cwd=ROOT, capture_output=True, text=True)
    loop_run = subprocess.run(command(
        "run_ner_no_trainer.py", "--model_name_or_path", tiny_bert, "--train_file", data["train"],
        "--validation_file", data["validation"], "--output_dir", str(tmp_path / "loop"), "--num_train_epochs", "1",
        "--checkpointing_steps", "epoch", "--with_tracking", "--report_to", "tensorboard", "--token", secrets[0],
        "--hub_token", secrets[1]), env=ENV, cwd=ROOT, capture_output=True, text=True)
    for result in (trainer_run, loop_run):
        assert result.returncode == 0, result.stderr[-3000:]
        assert not any(secret in result.stdout + result.stderr for secret in secrets)
    written = [os.path.join(folder, name) for folder, _, names in os.walk(tmp_path) for name in names]
    assert any(path.endswith("training_args.bin") for path in written)
    for path in written:
        with open(path, "rb") as handle:
            content = handle.read()
        assert not any(secret.encode() in content for secret in secrets), path


def test_trust_remote_code_is_off_by_default():
    from nerkit.arguments import ModelArguments

    assert ModelArguments(model_name_or_path="x").trust_remote_code is False


@pytest.fixture(scope="module")
def broken_model(tiny_bert, tmp_path_factory):
    """The tiny BERT with one NaN in its embeddings: the first loss is NaN."""
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=8)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.fill_(float("nan"))
    folder = tmp_path_factory.mktemp("broken")
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(tiny_bert, name), "rb") as source, open(folder / name, "wb") as target:
            target.write(source.read())
    return str(folder)


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_nan_loss_stops_with_the_step(broken_model, data, tmp_path, script):
    argv = ["--model_name_or_path", broken_model, "--train_file", data["train"], "--output_dir", str(tmp_path / "o"),
            "--ignore_mismatched_sizes"]
    if script == "run_ner.py":
        argv += ["--do_train", "--report_to", "none", "--save_strategy", "no"]
    result = subprocess.run(command(script, *argv), env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "loss became nan at optimizer step 1" in result.stderr and "Traceback" not in result.stderr
    assert "start afresh with --overwrite_output_dir" in result.stderr  # not a rerun that resumes the diverged run


@pytest.fixture(scope="module")
def one_word_breaks(tiny_bert, tmp_path_factory):
    """The tiny BERT with NaN in the embedding of the word "pierre" alone, and training data where one example
    of 8 has that word: with 2 processes, one of them sees a NaN loss at some step and the other does not."""
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids("pierre")] = float("nan")
    folder = tmp_path_factory.mktemp("one-word-breaks")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rows = examples(7) + [("Pierre visited Paris .".split(), ["B-PER", "O", "B-LOC", "O"])]
    return str(folder), write_jsonl(folder / "train.json", rows)


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_nan_loss_on_one_of_two_processes_stops_both(one_word_breaks, tmp_path, script):
    model, train_file = one_word_breaks
    argv = ["--model_name_or_path", model, "--train_file", train_file, "--output_dir", str(tmp_path / "o"),
            "--per_device_train_batch_size", "1", "--num_train_epochs", "1", "--ignore_mismatched_sizes"]
    if script == "run_ner.py":
        argv += ["--do_train", "--report_to", "none", "--save_strategy", "no"]
    # two processes started as torchrun starts them, but with no launcher to stop one when the other exits:
    # each stops by itself and says so (process 1 a second later, nerkit.errors)
    results = two_processes(command(script, *argv), tmp_path)
    assert all(result.returncode == 2 for result in results), results[0].stdout[-3000:]
    stops = [re.findall(r"error: The training loss became nan at optimizer step (\d+)", result.stderr)
             for result in results]
    assert stops[0] and stops[0] == stops[1], results[1].stderr[-3000:]  # both processes, the same step


def test_a_process_of_a_group_ends_at_once_after_its_error(tmp_path):
    """Nothing of the interpreter's shutdown runs after the message (an exit handler that would wait here),
    and what the process wrote before reaches its streams."""
    script = tmp_path / "stops.py"
    script.write_text("import atexit, time\n"
                      "from nerkit.errors import UserError, exit_on_user_error\n"
                      "atexit.register(time.sleep, 600)\n"
                      "print('before', flush=False)\n"
                      "def fails():\n"
                      "    raise UserError('The data is wrong.')\n"
                      "exit_on_user_error(fails)\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(ENV, PYTHONPATH=ROOT, WORLD_SIZE="2", RANK="0", PYTHONUNBUFFERED=""))
    assert (result.returncode, result.stdout, result.stderr) == (2, "before\n", "error: The data is wrong.\n")


@pytest.mark.parametrize("raised, rank, status, said", [
    ("KeyboardInterrupt()", "0", 130, "Interrupted.\n"),
    ("KeyboardInterrupt()", "1", 130, ""),  # Ctrl-C reaches every process: said once, by process 0
    ("RuntimeError('a bug')", "1", 1, "RuntimeError: a bug\n"),  # the traceback, then no shutdown either
])
def test_a_process_of_a_group_ends_at_once_after_ctrl_c_or_a_bug(tmp_path, raised, rank, status, said):
    """The interpreter's shutdown after Ctrl-C froze a process of a group until the launcher's SIGKILL, 30 s
    later (freeing DDP's reducer: an exit handler here that would wait)."""
    script = tmp_path / "stops.py"
    script.write_text("import atexit, time\n"
                      "from nerkit.errors import exit_on_user_error\n"
                      "atexit.register(time.sleep, 600)\n"
                      "def fails():\n"
                      f"    raise {raised}\n"
                      "exit_on_user_error(fails)\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(ENV, PYTHONPATH=ROOT, WORLD_SIZE="2", RANK=rank))
    assert result.returncode == status and result.stderr.endswith(said), result.stderr[-2000:]


def test_a_process_of_a_group_ends_at_once_after_its_run_without_freeing_it(tmp_path):
    """The run's objects are never freed in a process of a group: freeing DDP's reducer could deadlock with
    gloo's worker thread (an object here whose freeing would wait), after all the work was done. A process
    on its own frees them as ever."""
    script = tmp_path / "ends.py"
    script.write_text("import time\n"
                      "from nerkit.startup import end_of_group_run, keep_until_exit\n"
                      "class Reducer:\n"
                      "    def __del__(self):\n"
                      "        print('freed', flush=True)\n"
                      "        time.sleep(600 if KEEP else 0)\n"
                      "def main():\n"
                      "    keep_until_exit(Reducer())\n"
                      "import os; KEEP = os.environ['WORLD_SIZE'] == '2'\n"
                      "main()\n"
                      "print('done', flush=False)\n"
                      "end_of_group_run()\n", encoding="utf-8")
    for size, printed in (("2", "done\n"), ("1", "freed\ndone\n")):
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=dict(ENV, PYTHONPATH=ROOT, WORLD_SIZE=size, RANK="0", PYTHONUNBUFFERED=""))
        assert (result.returncode, result.stdout) == (0, printed), result.stderr[-2000:]


def two_processes(cmd, folder):
    """Run `cmd` as processes 0 and 1 of a group of two, with the environment torchrun gives each; their
    CompletedProcess results, in order. Fails the test with both processes' output if they have not both
    ended within 5 minutes (a run here takes seconds)."""
    group = dict(ENV, WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(rendezvous_port()))
    deadline = time.time() + 300
    with contextlib.ExitStack() as files:
        # output to files: a pipe left unread while the other process is waited for would fill and stop the
        # process writing to it, and with it the group
        logs = [[files.enter_context(open(folder / f"{rank}.{kind}", "w+")) for kind in ("out", "err")]
                for rank in (0, 1)]
        processes = [subprocess.Popen(cmd, cwd=ROOT, env=dict(group, RANK=str(rank), LOCAL_RANK=str(rank)),
                                      stdout=logs[rank][0], stderr=logs[rank][1], text=True) for rank in (0, 1)]
        while time.time() < deadline and any(process.poll() is None for process in processes):
            time.sleep(0.2)
        waiting = [rank for rank, process in enumerate(processes) if process.poll() is None]
        for rank in waiting:  # one left waiting for the other would otherwise outlive the test
            processes[rank].kill()
            processes[rank].wait()
        results = []
        for process, (out, err) in zip(processes, logs):
            out.seek(0), err.seek(0)
            results.append(subprocess.CompletedProcess(cmd, process.returncode, out.read(), err.read()))
    if waiting:
        pytest.fail(f"process(es) {waiting} still running after 5 minutes; their output:\n" + "\n".join(
            f"--- process {rank} (exit {result.returncode}):\n{result.stderr[-4000:]}"
            for rank, result in enumerate(results)))
    return results


def rendezvous_port():
    """A port no socket is bound to, below the range the kernel takes the local ports of outgoing connections
    from. Process 1 tries to connect to the port until process 0 listens on it; with a port from that range,
    one of those tries can be given the port itself as its own end (TCP's self-connect), and process 1 then
    waits for an answer from itself for half an hour."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            outgoing_from = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux
        outgoing_from = 32768
    for port in random.Random().sample(range(max(outgoing_from // 2, 1024), outgoing_from), 100):
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port below {outgoing_from}")


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_an_error_every_process_meets_is_said_once_under_torchrun(data, tmp_path, script):
    argv = ["--model_name_or_path", str(tmp_path / "no-model"), "--train_file", data["train"], "--output_dir",
            str(tmp_path / "o")] + (["--do_train"] if script == "run_ner.py" else [])
    result = subprocess.run(command(script, *argv, launcher=TORCHRUN), env=ENV, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0 and result.stderr.count("error: The folder") == 1, result.stderr[-3000:]


def test_push_to_hub_runs_on_every_process(tmp_path):
    """Trainer.push_to_hub saves the model first, which under FSDP or ZeRO-3 needs every process; it uploads
    from process zero alone."""
    pushed = []

    class SecondProcessTrainer:
        def is_world_process_zero(self):
            return False

        def push_to_hub(self, **kwargs):
            pushed.append(kwargs)

    training_args = TrainingArguments(output_dir=str(tmp_path), do_train=True, report_to="none")
    training_args.push_to_hub = True
    run_ner.publish(SecondProcessTrainer(), None, None, training_args, ["O"], {}, "python run_ner.py")
    assert len(pushed) == 1 and not os.listdir(tmp_path)  # pushed; the model card is process zero's to write


def test_metrics_see_float32_whatever_the_logits_dtype():
    logits = torch.randn(2, 5, 7).to(torch.bfloat16)
    reduced = reduce_logits(logits)
    assert reduced.dtype == torch.float32
    assert torch.equal(reduced[..., 0].long(), logits.float().argmax(-1))


def test_ctrl_c_stops_with_a_line_not_a_traceback(capsys):
    from nerkit.errors import exit_on_user_error

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(interrupted)
    assert stop.value.code == 130 and capsys.readouterr().err == "Interrupted.\n"


def test_an_in_process_run_gives_the_environment_back(tiny_bert, data, tmp_path, monkeypatch):
    # --hub_token travels in HF_TOKEN during the run (never in training_args.bin); a caller's own token, or
    # none, is there again afterwards
    monkeypatch.setenv("HF_TOKEN", "hf_callers")
    run_ner.cli(run_ner_args(tiny_bert, data, tmp_path / "a", "--do_train", "--num_train_epochs", "1",
                             "--save_strategy", "no", "--hub_token", "hf_runs"))
    assert os.environ["HF_TOKEN"] == "hf_callers"
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(UserError):  # a run that stops with a message gives it back too
        run_ner.cli(run_ner_args(tiny_bert, data, tmp_path / "a", "--do_train", "--hub_token", "hf_runs"))
    assert "HF_TOKEN" not in os.environ
