#!/usr/bin/env python
"""Benchmark this suite against the upstream recipe, side by side on this machine, timed as a user times it.

    python bench/bench.py                       # every row, seeds 42, 1, 2; updates bench/RESULTS.md
    python bench/bench.py --seeds 42 --epochs 1 --limit 200 --results /tmp/quick.md   # a smoke test
    python bench/bench.py --rows upstream nerkit --parts training     # a subset

Training: the packaged MiniLM on the packaged WNUT-16 split (1,916 training sentences), 3 epochs, batch
16, learning rate 5e-5, the same flags on every row (the upstream README's command line). Rows: the
upstream recipe; upstream with its fastest flags (length grouping, plus --bf16 where bf16 pays: a GPU
with bf16, or a CPU that runs it faster than fp32, with --use_cpu as its Trainer needs there); this
suite's run_ner.py; its run_ner_no_trainer.py (the Accelerate loop, which also evaluates after every
epoch, as upstream's does, and is given the Trainer's `--max_grad_norm 1.0`, as its upstream default is
no clipping, so both scripts do the same training). The rows take turns, seed by
seed. Each run is a separate process: "whole process" is its wall time measured from outside, as `time
python ...` reports it; "training" is the `train_runtime` the run writes; peak memory is the process's
maximum resident set. Prediction: words per second of `run_ner.py --do_predict` and of `predict_ner.py`'s
tagger (also with --int8) against `transformers.pipeline("token-classification", aggregation_strategy="first")`
on the same trained model and texts, documents longer than the model maximum included, each after loading and
a warm-up batch (run_ner.py through bench/warm_predict.py), and the validation
F1 of every trained model with and without --int8. Decoding: argmax against
Viterbi on the trained models. Evaluation memory: peak memory of evaluating 1x and 8x the validation set.

Training throughput (`--parts throughput`, only when named): one epoch of the upstream recipe and of
run_ner.py, the same command line, for the packaged MiniLM and a BERT-base-sized model with random
weights; real sub-tokens a second and the linear layers' FLOP/s against the device's measured
matrix-multiply peak (bf16 where it is fast, `--bf16` on both command lines).

RESULTS.md keeps one section per machine kind (CPU model with its family and model numbers, core count and
bf16 instructions, or GPU): a run replaces, in the section of its own machine kind, the subsections it
measured, and leaves the rest and the other sections.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nerkit import embedded  # noqa: E402
from nerkit.data import parse_conll, read_text  # noqa: E402
from nerkit.speed import (AUTO_PRECISION_VARIABLE, automatic_precision, bf16_pays_on_cpu,  # noqa: E402
                          cpu_bf16_instructions)

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
ROWS = {"upstream": "upstream recipe", "upstream-fastest": "upstream, fastest flags",
        "nerkit": "nerkit run_ner.py", "nerkit-loop": "nerkit run_ner_no_trainer.py"}
PARTS = ["training", "prediction", "decoding", "memory"]
ON_REQUEST = ["throughput"]  # not in the default run: it also trains a BERT-base-sized model


def main():
    options = parse_options()
    os.makedirs(options.work, exist_ok=True)
    data = prepare_data(options.work)
    model = embedded.model_path()
    bf16_fast = bf16_pays()
    sides = training_commands(options, data, model, bf16_fast)
    subtokens = count_subtokens(model, data["train.json"], options.limit) * options.epochs
    runs = {name: [] for name in sides}
    for seed in options.seeds:  # seed by seed, every row in turn: a slow spell of a shared machine hits all rows
        for name, command in sides.items():
            runs[name].append(train_run(command, seed, options.work, name))
    trained = [run["output_dir"] for run in runs.get(ROWS["nerkit"], [])]
    results = {"runs": runs, "subtokens": subtokens, "bf16_fast": bf16_fast}
    if trained and "prediction" in options.parts:
        results["prediction"] = prediction_benchmark(trained[0], data, options.work)
        if int8_possible():
            results["int8"] = int8_comparison(trained, data)
    if trained and "decoding" in options.parts:
        results["decoding"] = decoding_comparison(trained, data, options.work)
    if trained and "memory" in options.parts:
        results["memory"] = eval_memory(trained[0], data, options.work)
    if "throughput" in options.parts:
        models = {"packaged MiniLM": model, "BERT-base-sized, random weights": base_sized_model(options.work)}
        results["throughput"] = throughput_benchmark(options, data, models, bf16_fast)
    section = results_section(options, results)
    print("\n".join(section))
    merge_results(options.results, machine_heading(), section)


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, help="train on this many sentences only (a smoke test)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="training rows to run (prediction, decoding and memory need 'nerkit')")
    parser.add_argument("--parts", nargs="+", choices=PARTS + ON_REQUEST, default=PARTS,
                        help="what to measure (throughput only when named)")
    parser.add_argument("--work", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    options = parser.parse_args()
    if "training" not in options.parts:  # prediction, decoding and memory measure the model this row trains
        options.rows = ["nerkit"] if set(options.parts) & {"prediction", "decoding", "memory"} else []
    return options


def bf16_pays():
    """Whether bf16 is the fast precision where the runs train: a GPU that supports it, or a CPU on which a
    bf16 matrix multiply measures clearly faster than fp32; or what NERKIT_AUTO_PRECISION forces."""
    import torch

    forced = forced_precision()
    if forced:
        return forced == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bf16_pays_on_cpu()


def forced_precision():
    """"bf16" or "fp32" where NERKIT_AUTO_PRECISION is set, else None. The runs inherit it, so this suite's rows
    train in that precision; the bench then measures as on a machine where it is the fast one (fp32: as on a
    CPU without fast bf16, upstream's fastest flags without --bf16) and keeps the figures in a section of their
    own."""
    if not os.environ.get(AUTO_PRECISION_VARIABLE):
        return None
    automatic_precision()  # refuses a value that is not a precision, as the runs would
    return os.environ[AUTO_PRECISION_VARIABLE].strip().lower()


def int8_possible():
    """predict_ner.py --int8 tags on the CPU only; on a machine with an accelerator it refuses."""
    from nerkit.speed import accelerator_type

    return accelerator_type() is None


def command_line(options):
    """The bench.py command that reproduces this run."""
    forced = forced_precision()
    parts = [f"{AUTO_PRECISION_VARIABLE}={forced}"] if forced else []
    parts += ["python bench/bench.py", "--seeds", *map(str, options.seeds), "--epochs", str(options.epochs)]
    if options.limit:
        parts += ["--limit", str(options.limit)]
    if options.rows != list(ROWS) and "training" in options.parts:
        parts += ["--rows", *options.rows]
    if options.parts != PARTS:
        parts += ["--parts", *options.parts]
    return " ".join(parts)


def training_commands(options, data, model, bf16_fast):
    """{row name: argv} for the rows asked for, with OUT where the output folder goes."""
    training = ["--model_name_or_path", model, "--output_dir", "OUT", "--num_train_epochs", str(options.epochs),
                "--per_device_train_batch_size", "16", "--learning_rate", "5e-5",
                "--train_file", data["train.json"], "--validation_file", data["validation.json"]]
    training += ["--max_train_samples", str(options.limit)] if options.limit else []
    trainer = training + ["--do_train", "--do_eval", "--save_strategy", "no", "--report_to", "none",
                          "--disable_tqdm", "True"]
    upstream = [os.path.join(ROOT, "bench", "upstream_run_ner.py"), *trainer]
    fastest = ["--train_sampling_strategy", "group_by_length"] + (bf16_flags() if bf16_fast else [])
    commands = {
        "upstream": upstream,
        "upstream-fastest": upstream + fastest,
        "nerkit": [os.path.join(ROOT, "run_ner.py"), *trainer, "--overwrite_output_dir"],
        # the Trainer's clipping, which the loop leaves out by default: both scripts do the same training
        "nerkit-loop": [os.path.join(ROOT, "run_ner_no_trainer.py"), *training, "--overwrite_output_dir",
                        "--max_grad_norm", "1.0"],
    }
    names = dict(ROWS, **{"upstream-fastest": f"{ROWS['upstream-fastest']} ({' '.join(fastest)})"})
    return {names[key]: commands[key] for key in ROWS if key in options.rows}


def prepare_data(folder):
    """The embedded WNUT-16 split as CoNLL (ours) and JSON Lines (the upstream recipe reads csv/json)."""
    paths = {}
    for path in embedded.write_splits(os.path.join(folder, "wnut16")):
        name = os.path.basename(path).split(".")[0]
        rows, _ = parse_conll(path, read_text(path))
        json_path = path.replace(".conll", ".json")
        with open(json_path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"tokens": row["tokens"], "ner_tags": row["tags"]}) + "\n")
        paths[f"{name}.json"], paths[f"{name}.conll"] = json_path, path
    return paths


def count_subtokens(model, path, limit=None):
    """Real sub-tokens of one epoch (special tokens included, padding not)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    with open(path, encoding="utf-8") as handle:
        words = [json.loads(line)["tokens"] for line in handle][:limit]
    return sum(len(ids) for ids in tokenizer(words, is_split_into_words=True)["input_ids"])


def timed_process(argv, work):
    """Run `python argv` as a user would; (completed process, wall seconds from outside, peak MB)."""
    peak = os.path.join(work, "peak.txt")
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak, sys.executable, *argv], env=ENV, cwd=ROOT,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with open(peak) as handle:
        peak_mb = int(handle.read().split()[-1]) / 1024
    return result, seconds, peak_mb


def train_run(command, seed, work, name):
    output_dir = os.path.join(work, f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')[:40]}-seed{seed}")
    argv = [output_dir if arg == "OUT" else arg for arg in command] + ["--seed", str(seed)]
    result, seconds, peak_mb = timed_process(argv, work)
    if result.returncode != 0:
        raise SystemExit(f"{name} (seed {seed}) failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(output_dir, "train_results.json")) as handle:
        train = json.load(handle)
    with open(os.path.join(output_dir, "eval_results.json")) as handle:
        evaluation = json.load(handle)
    print(f"{name} seed {seed}: whole process {seconds:.1f} s, training {train['train_runtime']:.1f} s, "
          f"F1 {evaluation['eval_f1']:.4f}", flush=True)
    return {"whole": seconds, "seconds": train["train_runtime"], "f1": evaluation["eval_f1"], "peak_mb": peak_mb,
            "output_dir": output_dir}


def prediction_texts(data):
    """The test sentences plus documents of 60 of them each (about 1,200 words, past 512 sub-tokens), at most
    ten: three from the WNUT-16 test split."""
    rows, _ = parse_conll(data["test.conll"], read_text(data["test.conll"]))
    sentences = [row["tokens"] for row in rows]
    documents = [sum(sentences[i:i + 60], []) for i in range(0, 600, 60) if i + 60 <= len(sentences)] or \
        [sum(sentences, [])]
    return sentences, documents


def prediction_benchmark(model_dir, data, work, rounds=3):
    """Words per second after loading: run_ner.py --do_predict, predict_ner.py's tagger (and with --int8), the
    pipeline. They take turns for `rounds` rounds and each keeps its fastest, so a slow spell of the machine
    during one of them does not decide the ratio."""
    sentences, documents = prediction_texts(data)
    texts = sentences + documents
    words = sum(len(t) for t in texts)
    times = {"ours": [], "ours_first": [], "tagger": [], **({"tagger_int8": []} if int8_possible() else {}),
             "pipeline": []}
    batch, pipeline_batch = predictor_batch_sizes()
    for _ in range(rounds):
        seconds, first_seconds, ours_tags = time_ours(model_dir, texts, work, batch)
        times["ours"].append(seconds)
        times["ours_first"].append(first_seconds)
        times["tagger"].append(time_tagger(model_dir, texts))
        if "tagger_int8" in times:
            times["tagger_int8"].append(time_tagger(model_dir, texts, int8=True))
        seconds, agreement = time_pipeline(model_dir, texts, ours_tags, pipeline_batch)
        times["pipeline"].append(seconds)
    return {"words": words, "texts": len(texts), "long": len(documents), "rounds": rounds, "agreement": agreement,
            "batch": batch, "pipeline_batch": pipeline_batch,
            **{name: words / min(seconds) for name, seconds in times.items()}}


def time_ours(model_dir, texts, work, batch_size):
    """run_ner.py --do_predict on the texts in batches of `batch_size`, in one process after a warm-up call on the
    first eight (bench/warm_predict.py): (seconds of its second call, of its first, the tags), each its
    predict_runtime plus the tokenization it does first."""
    paths = [os.path.join(work, name) for name in ("predict-warm-up.jsonl", "predict.jsonl")]
    for path, some in zip(paths, (texts[:8], texts)):
        with open(path, "w", encoding="utf-8") as handle:
            for tokens in some:
                handle.write(json.dumps({"tokens": tokens}) + "\n")
    output_dir = tempfile.mkdtemp(dir=work)
    command = [sys.executable, os.path.join(ROOT, "bench", "warm_predict.py"), model_dir, *paths, output_dir,
               str(batch_size)]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    runtimes = []
    for folder in (output_dir, output_dir + "-first"):
        with open(os.path.join(folder, "predict_results.json")) as handle:
            runtimes.append(json.load(handle)["predict_runtime"])
    tokenizing = time_tokenizing(model_dir, texts)
    with open(os.path.join(output_dir, "predictions.txt")) as handle:
        tags = [line.split() for line in handle]
    return runtimes[0] + tokenizing, runtimes[1] + tokenizing, tags


def time_tokenizing(model_dir, texts):
    from transformers import AutoTokenizer

    from nerkit.data import Split
    from nerkit.tokenization import EncodingSettings, encode_split

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    split = Split("test", "bench", texts, None, [""] * len(texts))
    settings = EncodingSettings(max_length=tokenizer.model_max_length, stride=64)
    encode_split(split, tokenizer, {}, settings)  # warm-up: first-call imports are not tokenization
    started = time.perf_counter()
    encode_split(split, tokenizer, {}, settings)
    return time.perf_counter() - started


def time_tagger(model_dir, texts, int8=False):
    """predict_ner.py's Tagger on the pre-split texts (its defaults: Viterbi, the device's batch size), after
    loading and a warm-up batch."""
    import torch

    from predict_ner import Tagger

    torch.set_num_threads(os.cpu_count() or 1)
    tagger = Tagger(model_dir, None, 64, None, "viterbi", int8=int8)
    tagger.tag(texts[:8])  # warm-up, as for the pipeline's first batch
    started = time.perf_counter()
    tagger.tag(texts)
    return time.perf_counter() - started


def predictor_batch_sizes():
    """(ours, the pipeline's): the tagger's default batch size on this machine's device in its automatic
    precision (nerkit.speed.inference_batch_size), which run_ner.py is given too (--per_device_eval_batch_size),
    and the same rule's size in fp32 for the pipeline, which tags in fp32 (on a CPU 8, where batch 32 made it
    slower: 2,308 against 2,930 words/s on the Intel Xeon of RESULTS.md)."""
    from nerkit.speed import accelerator_type, inference_batch_size, inference_precision

    device = accelerator_type() or "cpu"
    return inference_batch_size(device, inference_precision().mixed_precision), inference_batch_size(device)


def time_pipeline(model_dir, texts, our_tags, batch_size):
    """The pipeline on the same words joined by spaces (stride for the long documents); returns its time
    and the share of short texts whose entities (type and words) match ours. It runs in this process after
    the tagger, so with the allocator settings the tagger made (nerkit.speed.keep_freed_memory), which made
    it about 2% faster on the AMD EPYC of RESULTS.md: if anything, the ratio to it is understated."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(os.cpu_count() or 1)
    tagger = pipeline("token-classification", model=model_dir, aggregation_strategy="first", stride=128)
    strings = [" ".join(tokens) for tokens in texts]
    tagger(strings[:8], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    found = tagger(strings, batch_size=batch_size)
    seconds = time.perf_counter() - started
    same = 0
    short = [i for i, tokens in enumerate(texts) if len(tokens) < 100]
    for i in short:
        theirs = sorted((e["entity_group"], e["word"].replace(" ", "").lower()) for e in found[i])
        ours = sorted((kind, "".join(texts[i][s:e + 1]).lower()) for kind, s, e in entities(our_tags[i]))
        same += theirs == ours
    return seconds, same / max(len(short), 1)


def int8_comparison(model_dirs, data):
    """Validation F1 of predict_ner.py's tagger in its automatic precision and with --int8, on each trained
    model, and the share of words whose label --int8 keeps."""
    from seqeval.metrics import f1_score

    from predict_ner import Tagger

    rows, _ = parse_conll(data["validation.conll"], read_text(data["validation.conll"]))
    words, gold = [row["tokens"] for row in rows], [row["tags"] for row in rows]
    scores, same = {"default": [], "int8": []}, []
    for model_dir in model_dirs:
        labels = {name: Tagger(model_dir, None, 64, 8, "viterbi", int8=name == "int8").tag(words)[0]
                  for name in scores}
        for name in scores:
            scores[name].append(f1_score(gold, labels[name]))
        pairs = [(a, b) for doc_a, doc_b in zip(labels["default"], labels["int8"]) for a, b in zip(doc_a, doc_b)]
        same.append(sum(a == b for a, b in pairs) / len(pairs))
    return {**scores, "same": same}


def entities(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    return get_entities(tags)


def decoding_comparison(model_dirs, data, work):
    """Validation F1 of each trained model with --decoding argmax and viterbi: {decoding: [F1 per seed]}."""
    scores = {"argmax": [], "viterbi": []}
    for model_dir in model_dirs:
        for decoding in scores:
            output_dir = tempfile.mkdtemp(dir=work)
            subprocess.run([sys.executable, os.path.join(ROOT, "run_ner.py"), "--model_name_or_path", model_dir,
                            "--validation_file", data["validation.json"], "--do_eval", "--decoding", decoding,
                            "--output_dir", output_dir, "--report_to", "none"], env=ENV, cwd=ROOT, check=True,
                           capture_output=True)
            with open(os.path.join(output_dir, "eval_results.json")) as handle:
                scores[decoding].append(json.load(handle)["eval_f1"])
    return scores


def eval_memory(model_dir, data, work):
    """Peak memory of evaluating the validation set once and eight times over."""
    with open(data["validation.json"], encoding="utf-8") as handle:
        lines = handle.readlines()
    peaks = {}
    for copies in (1, 8):
        path = os.path.join(work, f"validation-x{copies}.json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(lines * copies)
        output_dir = tempfile.mkdtemp(dir=work)
        result, _, peaks[copies] = timed_process([os.path.join(ROOT, "run_ner.py"), "--model_name_or_path", model_dir,
                                                  "--validation_file", path, "--do_eval", "--output_dir", output_dir,
                                                  "--report_to", "none", "--disable_tqdm", "True"], work)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
    return peaks


def summary(runs):
    f1 = [run["f1"] for run in runs]
    return {"whole": statistics.mean(run["whole"] for run in runs),
            "seconds": statistics.mean(run["seconds"] for run in runs), "f1": statistics.mean(f1),
            "f1_min": min(f1), "f1_max": max(f1), "peak_mb": max(run["peak_mb"] for run in runs), "all_f1": f1,
            "all_whole": [run["whole"] for run in runs]}


def machine_heading():
    """The machine kind: GPU name, or CPU model and core count."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}"
    # CPUs of one model name are of several generations (a Zen 4 and a Zen 5 are both "AMD EPYC" here) and
    # differ in their bf16 instructions, and with them the automatic precision: each gets its own section
    bf16 = "".join(f", {name}" for name in cpu_bf16_instructions())
    forced = forced_precision()
    return f"{cpu_name()}, {os.cpu_count()} cores{bf16}" + (f", every run in {forced} ({AUTO_PRECISION_VARIABLE})"
                                                            if forced else "")


def cpu_name(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name with its family and model numbers, as /proc/cpuinfo gives them."""
    fields = {}
    if os.path.exists(cpuinfo):
        with open(cpuinfo) as lines:
            for line in lines:  # the first processor's fields
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor()
    return f"{name} (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else name


def software():
    import torch
    import transformers

    return f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"


def precision_sentence(bf16_fast):
    """What bf16 is worth on this machine, upstream's fastest flags that follow, and this suite's choice."""
    import torch

    forced = forced_precision()
    if forced:
        measured = (f"{AUTO_PRECISION_VARIABLE}={forced} makes {forced} this suite's precision and the one "
                    "upstream's fastest flags use, whatever this machine runs fastest")
    elif torch.cuda.is_available():
        measured = f"This GPU {'supports' if bf16_fast else 'has no'} bf16"
    else:
        measured = (f"bf16 matrix multiply measured {'faster' if bf16_fast else 'slower'} than fp32 on this CPU "
                    "(`nerkit.speed.bf16_pays_on_cpu`)")
    fastest = 'length grouping with --bf16' if bf16_fast else 'length grouping alone'
    fastest += "" if bf16_fast or forced else " (bf16 is slower here)"
    return f"{measured}, so upstream's fastest flags here are {fastest}; this suite's automatic choice: " \
        f"{suite_precision()}."


def suite_precision():
    mixed_precision, reason = automatic_precision()
    return f"{'fp32' if mixed_precision == 'no' else mixed_precision} ({reason})"


def results_section(options, results):
    """The lines of this machine kind's section of RESULTS.md."""
    lines = [f"## {machine_heading()}", "", f"{software()}. {precision_sentence(results['bf16_fast'])}", ""]
    if results["runs"]:
        lines += training_lines(options, results)
    if "prediction" in results:
        lines += prediction_lines(results["prediction"], results.get("int8"))
    if "decoding" in results:
        lines += decoding_lines(options, results["decoding"])
    if "throughput" in results:
        lines += throughput_lines(options, results["throughput"])
    if "memory" in results:
        memory = results["memory"]
        lines += ["### Evaluation memory", "",
                  f"Peak memory of `run_ner.py --do_eval`: {memory[1]:,.0f} MB for the validation set, "
                  f"{memory[8]:,.0f} MB for eight times as many sentences.", ""]
    command = f"Command: `{command_line(options)}` ({time.strftime('%Y-%m-%d')})."
    return [part for line in lines for part in ([line, "", command] if line.startswith("### ") else [line])]


def training_lines(options, results):
    stats = {name: summary(runs) for name, runs in results["runs"].items()}
    subtokens, epochs = results["subtokens"], options.epochs
    base = stats.get(ROWS["upstream"])
    lines = [
        "### Training",
        "",
        f"Packaged MiniLM, WNUT-16 ({options.limit or 1916:,} training sentences, {subtokens // epochs:,} "
        f"sub-tokens an epoch), {epochs} epoch{'s' if epochs > 1 else ''}, batch 16, learning rate 5e-5, seeds "
        f"{', '.join(map(str, options.seeds))}; means over the seeds. Whole process: wall time of the command "
        "measured from outside (`time python ...`); training: the `train_runtime` it writes (the Accelerate "
        "loop's includes its evaluation after each epoch, and it clips gradients at 1.0 as the Trainer does). "
        "The runs take turns, seed by seed, so a slow spell of the machine falls on every row.",
        "",
        "| run | whole process (s) | training (s) | sub-tokens/s (training) | peak memory (MB) | eval F1 mean | "
        "F1 min-max | speed-up (whole process) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in stats.items():
        speedup = f"{base['whole'] / s['whole']:.2f}x" if base else "-"
        lines.append(f"| {name} | {s['whole']:.1f} | {s['seconds']:.1f} | {subtokens / s['seconds']:,.0f} | "
                     f"{s['peak_mb']:,.0f} | {s['f1']:.4f} | {s['f1_min']:.4f}-{s['f1_max']:.4f} | {speedup} |")
    lines += ["", "Per-seed F1: " + "; ".join(f"{name}: {', '.join(f'{v:.4f}' for v in s['all_f1'])}"
                                              for name, s in stats.items()), "",
              "Per-seed whole process (s): " + "; ".join(
                  name + ": " + ", ".join(f"{v:.1f}" for v in s["all_whole"]) for name, s in stats.items()), ""]
    lines += comparison_lines(stats)
    return lines


def comparison_lines(stats):
    ours, loop = stats.get(ROWS["nerkit"]), stats.get(ROWS["nerkit-loop"])
    base = stats.get(ROWS["upstream"])
    fastest = next((s for name, s in stats.items() if name.startswith(ROWS["upstream-fastest"])), None)
    lines = []
    if ours and base:
        lines.append(f"run_ner.py against the upstream recipe: {base['whole'] / ours['whole']:.2f}x the whole "
                     f"process, F1 {ours['f1'] - base['f1']:+.4f}.")
    if ours and fastest:
        lines.append(f"Against upstream's fastest flags: {fastest['whole'] / ours['whole']:.2f}x, F1 "
                     f"{ours['f1'] - fastest['f1']:+.4f}.")
    if ours and loop:
        lines.append(f"run_ner_no_trainer.py takes {loop['whole'] / ours['whole']:.2f}x run_ner.py's whole "
                     "process.")
    return lines + [""] if lines else []


def prediction_lines(prediction, int8):
    """The prediction subsection; `int8` (the --int8 comparison) is None where --int8 cannot run."""
    mean, pipeline, batch = statistics.mean, prediction["pipeline"], prediction.get("batch", 8)
    pipeline_batch = prediction.get("pipeline_batch", batch)
    lines = [
        "### Prediction",
        "",
        f"{prediction['texts']} texts ({prediction['words']:,} words; {prediction['long']} of them documents of "
        "about 1,200 words, longer than the model maximum), words per second after loading and a warm-up batch, "
        f"the fastest of {prediction['rounds']} rounds in which the predictors take turns. The tagger and the "
        "pipeline run their rounds in the bench's process, so from the second round on it has tagged these "
        "texts before; run_ner.py runs in a process of its own each round (bench/warm_predict.py: "
        "`run_ner.main()` on eight texts, then twice on the texts), timed the same way in its second call and "
        "also in its first:",
        "",
        "| predictor | words/s | against the pipeline |",
        "| --- | --- | --- |",
        f"| run_ner.py --do_predict (tokenization, windows, batch {batch}, Viterbi word decoding) | "
        f"{prediction['ours']:,.0f} | {prediction['ours'] / pipeline:.2f}x |",
        f"| predict_ner.py (its Tagger on the same words, batch {batch}, Viterbi) | {prediction['tagger']:,.0f} | "
        f"{prediction['tagger'] / pipeline:.2f}x |",
    ]
    if "ours_first" in prediction:
        lines.insert(-1, f"| run_ner.py --do_predict, its first call on these texts in the process | "
                         f"{prediction['ours_first']:,.0f} | {prediction['ours_first'] / pipeline:.2f}x |")
    if "tagger_int8" in prediction:
        lines.append(f"| predict_ner.py --int8 (linear layers in int8) | {prediction['tagger_int8']:,.0f} | "
                     f"{prediction['tagger_int8'] / pipeline:.2f}x |")
    lines += [f"| transformers pipeline, aggregation first, stride 128, batch {pipeline_batch} | {pipeline:,.0f} | 1.00x |", "",
              f"Short texts whose entities agree with the pipeline's: {prediction['agreement']:.1%}.", ""]
    if int8:
        lines += [
            f"--int8 on the validation set, each of run_ner.py's trained models: F1 {mean(int8['int8']):.4f} "
            f"against {mean(int8['default']):.4f} in the automatic precision (per model: "
            f"{', '.join(f'{a:.4f}/{b:.4f}' for a, b in zip(int8['int8'], int8['default']))}); words keeping "
            f"their label: {mean(int8['same']):.2%}.",
            "",
        ]
    else:
        lines += ["--int8 is not measured here: it tags on the CPU only, and this machine has an accelerator.", ""]
    return lines


def decoding_lines(options, decoding):
    return [
        "### Decoding",
        "",
        "Validation F1 of run_ner.py's trained models (the training runs above) decoded both ways:",
        "",
        "| decoding | " + " | ".join(f"seed {seed}" for seed in options.seeds) + " | mean |",
        "| --- | " + " | ".join("---" for _ in options.seeds) + " | --- |",
        *[f"| {name} | " + " | ".join(f"{value:.4f}" for value in values) + f" | {statistics.mean(values):.4f} |"
          for name, values in decoding.items()],
        "",
    ]


def base_sized_model(work):
    """A BERT-base-sized model (12 layers, hidden 768, BertConfig's defaults) with random weights and the
    packaged MiniLM's tokenizer, saved once under `work`: throughput needs the shapes, not trained weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = os.path.join(work, "bert-base-sized")
    if not os.path.isfile(os.path.join(path, "config.json")):
        tokenizer = AutoTokenizer.from_pretrained(embedded.model_path())
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer)), add_pooling_layer=False).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def throughput_precision(bf16_fast):
    """(device, torch dtype name, extra flags): bf16 where the device runs it fast (`bf16_pays`), with `--bf16`
    on the command line of both rows as a user of upstream would pass it; otherwise fp32."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (device, "bfloat16", bf16_flags()) if bf16_fast else (device, "float32", [])


def bf16_flags():
    """bf16 on a command line of upstream's: the Trainer takes --bf16 on a CPU only with --use_cpu."""
    import torch

    return ["--bf16"] if torch.cuda.is_available() else ["--bf16", "--use_cpu"]


def matmul_peak(device, dtype_name, size=None, repeats=None):
    """The device's measured matrix-multiply rate in FLOP/s: the fastest of a few square products."""
    import torch

    size = size or (8192 if device == "cuda" else 4096)
    repeats = repeats or (20 if device == "cuda" else 3)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a, b = (torch.randn(size, size, device=device, dtype=getattr(torch, dtype_name)) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        synchronize()
        started = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def linear_flops_per_subtoken(model, labels):
    """Training FLOPs a sub-token spends in the model's linear layers: 2 forward and 4 backward per weight
    (attention's own products and the embeddings are left out, so the share of the peak is a lower bound)."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(model, num_labels=labels)
    with torch.device("meta"):
        classifier = AutoModelForTokenClassification.from_config(config)
    return 6 * sum(module.weight.numel() for module in classifier.modules() if isinstance(module, torch.nn.Linear))


def training_labels(path):
    with open(path, encoding="utf-8") as handle:
        return len({tag for line in handle for tag in json.loads(line)["ner_tags"]})


def throughput_benchmark(options, data, models, bf16_fast, peak=None):
    """For each of `models` ({name: path}): the upstream recipe and run_ner.py with the same command line, one
    epoch each (seed: the first of --seeds), taking turns. Returns the device, precision, its measured
    matrix-multiply peak and per run the real sub-tokens trained a second (from `train_runtime`) and the
    linear layers' FLOP/s, and where the run wrote its results."""
    device, dtype, flags = throughput_precision(bf16_fast)
    peak = peak or matmul_peak(device, dtype)
    labels = training_labels(data["train.json"])
    one_epoch = argparse.Namespace(**dict(vars(options), epochs=1, rows=["upstream", "nerkit"]))
    rows = []
    for label, model in models.items():
        subtokens = count_subtokens(model, data["train.json"], options.limit)
        flops = linear_flops_per_subtoken(model, labels)
        for name, command in training_commands(one_epoch, data, model, False).items():
            run = train_run(command + flags, options.seeds[0], options.work, f"{name} {label}")
            rate = subtokens / run["seconds"]
            rows.append({"model": label, "run": name, "subtokens_per_s": rate, "flops": rate * flops,
                         "output_dir": run["output_dir"]})
    return {"device": device, "dtype": dtype, "flags": flags, "peak": peak, "rows": rows}


def throughput_lines(options, throughput):
    precision = f"{throughput['dtype']} ({' '.join(throughput['flags'])} on both command lines)" \
        if throughput["flags"] else throughput["dtype"]
    lines = [
        "### Training throughput",
        "",
        f"One epoch of WNUT-16 ({options.limit or 1916:,} training sentences), batch 16, seed {options.seeds[0]}, "
        f"device {throughput['device']}, {precision}. Sub-tokens a second: the epoch's real sub-tokens over "
        "`train_runtime`. Linear layers' rate: 6 FLOPs per weight of the linear layers for each sub-token "
        "(attention's products left out), against this device's measured matrix-multiply peak of "
        f"{throughput['peak'] / 1e12:.2f} TFLOP/s ({throughput['dtype']}, the fastest of a few square products).",
        "",
        "| model | run | sub-tokens/s | linear layers (TFLOP/s) | share of the measured peak |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in throughput["rows"]:
        lines.append(f"| {row['model']} | {row['run']} | {row['subtokens_per_s']:,.0f} | {row['flops'] / 1e12:.3f} | "
                     f"{row['flops'] / throughput['peak']:.1%} |")
    return lines + [""]


def merge_results(path, heading, section):
    """Write `section` into RESULTS.md: in the section with the same machine heading, its header and the
    subsections (`### ...`) it measured replace theirs, and the subsections of other runs stay (a run of
    some parts does not erase the others); a machine kind without a section gets one at the end. Every
    other machine's section stays as it is."""
    title = ("# Benchmark results\n\nOne section per machine kind; `python bench/bench.py` rewrites, in its own, the "
             "parts it measured.\n\n")
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else title
    parts = re.split(r"(?m)^(?=## )", text)
    head, sections = parts[0], [old.rstrip("\n") + "\n\n" for old in parts[1:]]
    new = "\n".join(section).rstrip("\n") + "\n\n"
    for index, old in enumerate(sections):
        if old.splitlines()[0] == f"## {heading}":
            sections[index] = merge_subsections(old, new)
            break
    else:
        sections.append(new)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + "".join(sections).rstrip("\n") + "\n")


HAND_WRITTEN = "Read by hand"  # a reading of the figures written after a run, kept by the next one


def merge_subsections(old, new):
    """The new section's header, then the old section's subsections with those the new one has replaced
    in place, then the new one's others. A replaced subsection keeps its readings by hand (from its first
    paragraph that begins HAND_WRITTEN to its end) after the new figures."""
    def split(text):
        head, *chunks = re.split(r"(?m)^(?=### )", text)
        return head, {chunk.splitlines()[0]: chunk.rstrip("\n") + "\n\n" for chunk in chunks}

    _, old_parts = split(old)
    new_head, new_parts = split(new)
    for title, chunk in new_parts.items():
        found = re.search(rf"(?m)^{HAND_WRITTEN}", old_parts.get(title, ""))
        if found:
            new_parts[title] = chunk + old_parts[title][found.start():]
    return new_head + "".join({**old_parts, **new_parts}.values())


if __name__ == "__main__":
    main()
