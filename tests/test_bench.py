"""bench/bench.py's training throughput part: what it counts and how it reports it (never how fast)."""

import argparse
import importlib.util
import json
import os

import pytest

from tiny_models import build_tiny_bert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_script", os.path.join(ROOT, "bench", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_flops_count_every_linear_weight_of_the_token_classifier(bench, tiny_bert):
    hidden, intermediate, layers, labels = 32, 64, 2, 5  # tiny_bert's shape
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate  # query, key, value, output; the feed-forward pair
    assert bench.linear_flops_per_subtoken(tiny_bert, labels) == 6 * (layers * per_layer + hidden * labels)


def test_throughput_rows_are_the_epochs_sub_tokens_over_each_runs_train_runtime(bench, tiny_bert, ner_files,
                                                                             tmp_path):
    data = {"train.json": ner_files["train"], "validation.json": ner_files["validation"]}
    options = argparse.Namespace(seeds=[42], epochs=3, limit=None, rows=["nerkit"], parts=["throughput"],
                                 work=str(tmp_path))
    other = build_tiny_bert(tmp_path / "other-bert", seed=1)
    result = bench.throughput_benchmark(options, data, {"tiny": tiny_bert, "other": other}, False,
                                    peak=1e12)

    assert [(row["model"], row["run"]) for row in result["rows"]] == [
        ("tiny", "upstream recipe"), ("tiny", "nerkit run_ner.py"),
        ("other", "upstream recipe"), ("other", "nerkit run_ner.py")]
    subtokens = bench.count_subtokens(tiny_bert, ner_files["train"])
    flops = bench.linear_flops_per_subtoken(tiny_bert, bench.training_labels(ner_files["train"]))
    for row in result["rows"][:2]:
        with open(os.path.join(row["output_dir"], "train_results.json")) as handle:
            train = json.load(handle)
        assert train["epoch"] == 1  # one epoch, whatever --epochs says
        assert row["subtokens_per_s"] == pytest.approx(subtokens / train["train_runtime"])
        assert row["flops"] == pytest.approx(row["subtokens_per_s"] * flops)
    lines = bench.throughput_lines(options, result)
    table = [line for line in lines if line.startswith("| tiny |")]
    assert len(table) == 2 and table[0].endswith(f"{result['rows'][0]['flops'] / 1e12:.1%} |")


def test_matmul_peak_is_a_rate_of_the_product_it_times(bench):
    rate = bench.matmul_peak("cpu", "float32", size=128, repeats=2)
    assert 1e6 < rate < 1e15


def test_a_run_of_some_parts_replaces_only_its_own_subsections(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\nintro\n\n"
                    "## CPU A, 2 cores\n\nold header\n\n### Training\n\nold training\n\n### Prediction\n\nold prediction\n\n"
                    "## GPU B\n\n### Training\n\nB's training\n")
    bench.merge_results(str(path), "CPU A, 2 cores", ["## CPU A, 2 cores", "", "new header", "", "### Training", "",
                                                      "new training", "", "### Training throughput", "", "new rate"])
    assert path.read_text() == ("# Benchmark results\n\nintro\n\n"
                                "## CPU A, 2 cores\n\nnew header\n\n### Training\n\nnew training\n\n"
                                "### Prediction\n\nold prediction\n\n### Training throughput\n\nnew rate\n\n"
                                "## GPU B\n\n### Training\n\nB's training\n")
    bench.merge_results(str(path), "GPU C", ["## GPU C", "", "### Training", "", "C's training"])
    assert path.read_text().endswith("## GPU B\n\n### Training\n\nB's training\n\n## GPU C\n\n### Training\n\n"
                                     "C's training\n")



def test_a_new_run_keeps_the_readings_by_hand_of_the_subsections_it_replaces(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## CPU A\n\n### Training\n\nold table\n\nRead by hand (day 1): why.\n\n"
                    "More of it.\n\n### Prediction\n\nold prediction\n")
    bench.merge_results(str(path), "CPU A", ["## CPU A", "", "### Training", "", "new table", "", "### Prediction", "",
                                             "new prediction"])
    assert path.read_text() == ("# Benchmark results\n\n## CPU A\n\n### Training\n\nnew table\n\n"
                                "Read by hand (day 1): why.\n\nMore of it.\n\n### Prediction\n\nnew prediction\n")


def test_each_cpu_kind_gets_its_own_section_by_its_bf16_instructions(bench, monkeypatch):
    """Two AMD EPYCs, one with AVX512-BF16 and one without, are both "AMD EPYC": their figures must not mix."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: [])
    plain = bench.machine_heading()
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: ["AVX512-BF16"])
    assert bench.machine_heading() == f"{plain}, AVX512-BF16"
    assert plain.endswith(f"{os.cpu_count()} cores")


def test_cpus_of_one_model_name_and_other_generations_get_their_own_sections(bench, tmp_path):
    """A Zen 4 and a Zen 5 both call themselves "AMD EPYC" (with AVX512-BF16 both): their family and model
    numbers tell them apart."""
    names = []
    for family, model in (("25", "17"), ("26", "2")):
        cpuinfo = tmp_path / f"cpuinfo{family}"
        processor = f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n" \
                    "model name\t: AMD EPYC\nstepping\t: 1\n"
        cpuinfo.write_text(processor + "\n" + processor.replace(": 0", ": 1", 1))
        names.append(bench.cpu_name(str(cpuinfo)))
    assert names == ["AMD EPYC (family 25, model 17)", "AMD EPYC (family 26, model 2)"]


def test_prediction_lines_leave_out_int8_where_it_cannot_run(bench):
    prediction = {"texts": 3, "words": 30, "long": 1, "rounds": 3, "agreement": 1.0, "ours": 20.0, "ours_first": 15.0,
                  "tagger": 30.0, "pipeline": 10.0}
    lines = bench.prediction_lines(prediction, None)  # a machine with an accelerator: no --int8 measured
    assert not any("--int8 (linear layers" in line for line in lines)
    assert any(line.startswith("--int8 is not measured here") for line in lines)
    assert "| predict_ner.py (its Tagger on the same words, batch 8, Viterbi) | 30 | 3.00x |" in lines
    assert lines.index("| run_ner.py --do_predict, its first call on these texts in the process | 15 | 1.50x |") == \
        lines.index("| predict_ner.py (its Tagger on the same words, batch 8, Viterbi) | 30 | 3.00x |") - 1

    int8 = {"int8": [0.5], "default": [0.52], "same": [0.99]}
    lines = bench.prediction_lines(dict(prediction, tagger_int8=40.0), int8)
    assert "| predict_ner.py --int8 (linear layers in int8) | 40 | 4.00x |" in lines
    assert any(line.startswith("--int8 on the validation set") for line in lines)


def test_bf16_throughput_rows_name_the_flags_a_user_of_upstream_would_pass(bench, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.throughput_precision(True) == ("cpu", "bfloat16", ["--bf16", "--use_cpu"])
    assert bench.throughput_precision(False) == ("cpu", "float32", [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.throughput_precision(True) == ("cuda", "bfloat16", ["--bf16"])


def test_upstreams_fastest_flags_take_bf16_on_a_cpu_as_its_trainer_needs(bench, monkeypatch, tmp_path):
    """The Trainer refuses --bf16 on a machine without a GPU unless --use_cpu comes with it."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = argparse.Namespace(seeds=[42], epochs=1, limit=None, rows=["upstream-fastest"])
    data = {"train.json": "t.json", "validation.json": "v.json"}
    (name, argv), = bench.training_commands(options, data, "model", True).items()
    flags = argv[argv.index("--num_train_epochs"):]
    assert "--bf16" in flags and "--use_cpu" in flags and "group_by_length" in name
    trainer_flags = [flag for flag in flags[flags.index("--do_train"):]] + ["--output_dir", str(tmp_path)]
    arguments, = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(trainer_flags)
    assert arguments.bf16 and arguments.use_cpu


def test_run_ner_is_timed_on_every_text_after_a_warm_up_call_in_the_same_process(bench, tiny_bert, ner_files,
                                                                                 tmp_path):
    import math

    from conftest import SENTENCES
    from test_run_ner import predictions, read_json, run

    model = str(run(tiny_bert, tmp_path / "model", "--do_train", "--num_train_epochs", "1",
                    files={"train": ner_files["train"]}))
    texts = [words.split() for words, _ in SENTENCES] * 4
    work = tmp_path / "work"
    work.mkdir()
    seconds, first_seconds, tags = bench.time_ours(model, texts, str(work), 5)
    assert [len(labels) for labels in tags] == [len(words) for words in texts] and seconds > 0
    (warm_up,) = [path for path in work.iterdir() if path.name.endswith("-warm-up")]
    timed = work / warm_up.name[:-len("-warm-up")]
    first = work / (timed.name + "-first")
    assert len(predictions(warm_up)) == 8 and predictions(timed) == tags == predictions(first)
    results = read_json(timed / "predict_results.json")
    assert results["predict_runtime"] <= seconds
    assert read_json(first / "predict_results.json")["predict_runtime"] <= first_seconds
    assert round(results["predict_runtime"] * results["predict_steps_per_second"]) == math.ceil(len(texts) / 5)


def test_step_time_makes_the_same_batches_in_one_row_or_padded(tiny_bert, ner_files):
    spec = importlib.util.spec_from_file_location("step_time", os.path.join(ROOT, "bench", "step_time.py"))
    step_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_time)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rows, labels = step_time.features(ner_files["train"], tokenizer)
    made = {mode: step_time.batches(mode, AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=labels),
                                    tokenizer, rows, 2) for mode in step_time.MODES}  # a model each, as in its runs
    real = {mode: [int((batch["labels"] != -100).sum()) for batch in batches] for mode, batches in made.items()}
    assert real["ours"] == real["random"] and real["ours-grouped"] == real["grouped"]
    assert [batch["input_ids"].shape[0] for batch in made["ours"]] == [1, 1]  # one row each
    assert [batch["input_ids"].shape[0] for batch in made["grouped"]] == [16, 16]
    widths = [batch["input_ids"].shape[1] for batch in made["grouped"]]
    assert widths[0] >= widths[1] and sum(widths) * 16 < sum(b["input_ids"].numel() for b in made["random"])


def test_a_forced_precision_measures_as_where_it_is_the_fast_one_in_a_section_of_its_own(bench, monkeypatch):
    """NERKIT_AUTO_PRECISION=fp32 on a CPU with bf16 instructions stands in for a CPU without fast bf16: this
    suite's runs inherit it, upstream's fastest flags drop --bf16, and the figures keep out of the CPU's section."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "cpu_bf16_instructions", lambda: ["AVX512-BF16"])
    monkeypatch.setattr(bench, "bf16_pays_on_cpu", lambda: True)
    monkeypatch.delenv("NERKIT_AUTO_PRECISION", raising=False)
    measured = bench.machine_heading()
    assert bench.bf16_pays() and bench.forced_precision() is None
    monkeypatch.setenv("NERKIT_AUTO_PRECISION", "fp32")
    assert not bench.bf16_pays()
    assert bench.machine_heading() == f"{measured}, every run in fp32 (NERKIT_AUTO_PRECISION)"
    options = argparse.Namespace(seeds=[42], epochs=1, limit=None, rows=["upstream-fastest"], parts=["training"])
    assert bench.command_line(options).startswith("NERKIT_AUTO_PRECISION=fp32 python bench/bench.py")
    assert bench.precision_sentence(False).endswith("length grouping alone; this suite's automatic choice: fp32 "
                                                    "(forced by NERKIT_AUTO_PRECISION=fp32).")
    data = {"train.json": "t", "validation.json": "v"}
    (name, argv), = bench.training_commands(options, data, "m", bench.bf16_pays()).items()
    assert "--bf16" not in argv and "group_by_length" in name
    monkeypatch.setenv("NERKIT_AUTO_PRECISION", "fp8")
    with pytest.raises(Exception, match="NERKIT_AUTO_PRECISION=fp8 is not a precision"):
        bench.forced_precision()
