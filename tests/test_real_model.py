"""Real runs of the packaged MiniLM: fine-tuned on 400 WNUT-16 tweets against the same model with an
untrained head (measured here, 2 CPU cores, about 80 s: trained F1 0.109, untrained F1 0.003), and run.sh
itself on a shortened recipe."""

import json
import os
import subprocess
import sys

import pytest

import run_ner
from conftest import ROOT

embedded = pytest.importorskip("nerkit.embedded")


def eval_f1(output_dir):
    with open(os.path.join(output_dir, "eval_results.json"), encoding="utf-8") as handle:
        return json.load(handle)["eval_f1"]


def test_minilm_learns_wnut16_entities(tmp_path):
    train, validation, _ = embedded.write_splits(str(tmp_path / "wnut16"))
    common = ["--model_name_or_path", embedded.model_path(), "--train_file", train, "--validation_file", validation,
              "--report_to", "none", "--disable_tqdm", "True", "--seed", "1"]
    run_ner.cli(common + ["--output_dir", str(tmp_path / "untrained"), "--do_eval"])
    run_ner.cli(common + ["--output_dir", str(tmp_path / "trained"), "--do_train", "--do_eval",
                          "--max_train_samples", "400", "--num_train_epochs", "4", "--learning_rate", "1e-4",
                          "--per_device_train_batch_size", "16", "--save_strategy", "no"])
    untrained, trained = eval_f1(tmp_path / "untrained"), eval_f1(tmp_path / "trained")
    print(f"entity F1 on 239 validation tweets: untrained head {untrained:.4f}, after training {trained:.4f}")
    assert untrained < 0.02, f"untrained head F1 {untrained}"
    assert trained > 0.05 and trained > 5 * untrained, f"trained F1 {trained} vs untrained {untrained}"


def test_run_sh_ends_with_its_best_evaluated_checkpoint(tmp_path):
    """run.sh as a user runs it, shortened by extra flags (256 tweets, 3 epochs of 32 steps, validation
    every 16 steps): it writes scores and predictions, and the final validation scores are those of the
    evaluation with the best F1, whichever step that was."""
    output = tmp_path / "out"
    env = dict(os.environ, OUTPUT_DIR=str(output), DATA_DIR=str(tmp_path / "data"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    shortened = ["--max_train_samples", "256", "--max_eval_samples", "80", "--max_predict_samples", "16",
                 "--num_train_epochs", "3", "--eval_steps", "16", "--save_steps", "16", "--logging_steps", "16", "--learning_rate", "3e-4",
                 "--seed", "3"]
    run = subprocess.run(["bash", "run.sh", *shortened], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    with open(output / "trainer_state.json", encoding="utf-8") as handle:
        state = json.load(handle)
    evaluations = {entry["step"]: entry["eval_f1"] for entry in state["log_history"] if "eval_f1" in entry}
    assert sorted(evaluations) == [16, 32, 48, 64, 80, 96]
    best = max(evaluations.values())
    print(f"validation F1 by step: {evaluations}")
    assert state["best_metric"] == best
    assert eval_f1(output) == pytest.approx(best, abs=1e-9)
    assert (output / "predictions.txt").is_file() and (output / "predict_results.json").is_file()
