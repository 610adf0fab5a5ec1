#!/usr/bin/env python
"""Benchmark this suite's run_ner.py against the upstream recipe, side by side on this machine.

    python bench/bench.py                       # seeds 42, 1, 2; writes bench/RESULTS.md
    python bench/bench.py --seeds 42 --epochs 1 --results /tmp/quick.md   # a quick look

Training: the packaged MiniLM on the packaged WNUT-16 split (1,916 training sentences), 3 epochs, batch
16, learning rate 5e-5, the same flags on both sides (the upstream README's command line). Each run is a
separate process; training time is the `train_runtime` each side reports, peak memory the process's
maximum resident set. Upstream also runs with its own best flags: length grouping, and bf16 where this
CPU runs bf16 faster than fp32. Prediction: words per second of the suite's prediction path against
`transformers.pipeline("token-classification")` on the same trained model and texts, documents longer than
the model maximum included. Evaluation memory: peak memory of evaluating 1x and 8x the validation set.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nerkit import embedded  # noqa: E402
from nerkit.data import parse_conll, read_text  # noqa: E402
from nerkit.speed import automatic_precision, bf16_pays_on_cpu  # noqa: E402

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def main():
    options = parse_options()
    os.makedirs(options.work, exist_ok=True)
    data = prepare_data(options.work)
    model = embedded.model_path()
    common = ["--model_name_or_path", model, "--output_dir", "OUT", "--do_train", "--do_eval",
              "--num_train_epochs", str(options.epochs), "--per_device_train_batch_size", "16",
              "--learning_rate", "5e-5", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True"]
    json_files = ["--train_file", data["train.json"], "--validation_file", data["validation.json"]]
    if options.limit:
        json_files += ["--max_train_samples", str(options.limit)]
    sides = {
        "upstream": [os.path.join(ROOT, "bench", "upstream_run_ner.py"), *common, *json_files],
        "upstream, length grouping": [os.path.join(ROOT, "bench", "upstream_run_ner.py"), *common, *json_files,
                                      "--train_sampling_strategy", "group_by_length"],
        "nerkit run_ner.py": [os.path.join(ROOT, "run_ner.py"), *common, *json_files],
    }
    bf16_fast = bf16_pays_on_cpu()
    if bf16_fast:
        sides["upstream, length grouping + bf16"] = sides["upstream, length grouping"] + ["--bf16"]
    subtokens = count_subtokens(model, data["train.json"], options.limit) * options.epochs
    runs = {name: [train_run(command, seed, options.work, name) for seed in options.seeds]
            for name, command in sides.items()}
    decoding = decoding_comparison([run["output_dir"] for run in runs["nerkit run_ner.py"]], data, options.work)
    kept_model = runs["nerkit run_ner.py"][0]["output_dir"]
    prediction = prediction_benchmark(kept_model, data, options.work)
    memory = eval_memory(kept_model, data, options.work)
    write_results(options, runs, subtokens, prediction, memory, bf16_fast, decoding)


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default=os.path.join(ROOT, "bench", "out"))
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    parser.add_argument("--limit", type=int, help="train on this many sentences only (a smoke test)")
    return parser.parse_args()


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


def train_run(command, seed, work, name):
    output_dir = os.path.join(work, f"{name.split()[0].strip(',')}-{abs(hash(name)) % 10000}-seed{seed}")
    argv = [output_dir if arg == "OUT" else arg for arg in command] + ["--seed", str(seed)]
    if os.path.basename(command[0]) == "run_ner.py":
        argv.append("--overwrite_output_dir")
    peak = os.path.join(work, "peak.txt")
    result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak, sys.executable, *argv], env=ENV, cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} (seed {seed}) failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(output_dir, "train_results.json")) as handle:
        train = json.load(handle)
    with open(os.path.join(output_dir, "eval_results.json")) as handle:
        evaluation = json.load(handle)
    with open(peak) as handle:
        peak_kb = int(handle.read().split()[-1])
    print(f"{name} seed {seed}: {train['train_runtime']:.1f} s, F1 {evaluation['eval_f1']:.4f}", flush=True)
    return {"seconds": train["train_runtime"], "f1": evaluation["eval_f1"], "peak_mb": peak_kb / 1024,
            "output_dir": output_dir}


def prediction_texts(data):
    """The test sentences plus ten documents of 60 sentences each (about 1,200 words, past 512 sub-tokens)."""
    rows, _ = parse_conll(data["test.conll"], read_text(data["test.conll"]))
    sentences = [row["tokens"] for row in rows]
    documents = [sum(sentences[i:i + 60], []) for i in range(0, 600, 60) if i + 60 <= len(sentences)] or \
        [sum(sentences, [])]
    return sentences, documents


def prediction_benchmark(model_dir, data, work):
    """Words per second: run_ner.py's prediction path and the pipeline, each timed after loading."""
    sentences, documents = prediction_texts(data)
    texts = sentences + documents
    words = sum(len(t) for t in texts)
    ours_seconds, ours_tags = time_ours(model_dir, texts, work)
    pipe_seconds, agreement = time_pipeline(model_dir, texts, ours_tags)
    return {"words": words, "texts": len(texts), "long": len(documents), "ours": words / ours_seconds,
            "pipeline": words / pipe_seconds, "agreement": agreement}


def time_ours(model_dir, texts, work):
    """run_ner.py --do_predict on the texts; its predict_runtime plus the tokenization it does first."""
    path = os.path.join(work, "predict.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for tokens in texts:
            handle.write(json.dumps({"tokens": tokens}) + "\n")
    output_dir = tempfile.mkdtemp(dir=work)
    command = [sys.executable, os.path.join(ROOT, "run_ner.py"), "--model_name_or_path", model_dir, "--test_file",
               path, "--do_predict", "--output_dir", output_dir, "--report_to", "none", "--disable_tqdm", "True"]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    with open(os.path.join(output_dir, "predict_results.json")) as handle:
        runtime = json.load(handle)["predict_runtime"]
    tokenizing = time_tokenizing(model_dir, texts)
    with open(os.path.join(output_dir, "predictions.txt")) as handle:
        tags = [line.split() for line in handle]
    return runtime + tokenizing, tags


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


def time_pipeline(model_dir, texts, our_tags):
    """The pipeline on the same words joined by spaces (stride for the long documents); returns its time
    and the share of short texts whose entities (type and words) match ours."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(os.cpu_count() or 1)
    tagger = pipeline("token-classification", model=model_dir, aggregation_strategy="first", stride=128)
    strings = [" ".join(tokens) for tokens in texts]
    started = time.perf_counter()
    found = tagger(strings, batch_size=8)
    seconds = time.perf_counter() - started
    same = 0
    short = [i for i, tokens in enumerate(texts) if len(tokens) < 100]
    for i in short:
        theirs = sorted((e["entity_group"], e["word"].replace(" ", "").lower()) for e in found[i])
        ours = sorted((kind, "".join(texts[i][s:e + 1]).lower()) for kind, s, e in entities(our_tags[i]))
        same += theirs == ours
    return seconds, same / max(len(short), 1)


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
        peak = os.path.join(work, "peak.txt")
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak, sys.executable, os.path.join(ROOT, "run_ner.py"),
                        "--model_name_or_path", model_dir, "--validation_file", path, "--do_eval", "--output_dir",
                        output_dir, "--report_to", "none", "--disable_tqdm", "True"], env=ENV, cwd=ROOT,
                       check=True, capture_output=True)
        with open(peak) as handle:
            peaks[copies] = int(handle.read().split()[-1]) / 1024
    return peaks


def summary(runs):
    seconds = [run["seconds"] for run in runs]
    f1 = [run["f1"] for run in runs]
    return {"seconds": statistics.mean(seconds), "f1": statistics.mean(f1), "f1_min": min(f1), "f1_max": max(f1),
            "peak_mb": max(run["peak_mb"] for run in runs), "all_f1": f1, "all_seconds": seconds}


def machine():
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def suite_precision():
    mixed_precision, reason = automatic_precision()
    return f"{'fp32' if mixed_precision == 'no' else mixed_precision} ({reason})"


def write_results(options, runs, subtokens, prediction, memory, bf16_fast, decoding):
    stats = {name: summary(side) for name, side in runs.items()}
    base = stats["upstream"]["seconds"]
    ours = stats["nerkit run_ner.py"]
    best_upstream = min((s["seconds"], name) for name, s in stats.items() if name.startswith("upstream"))
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}. bf16 matrix multiply {'faster' if bf16_fast else 'slower'} than fp32 here "
        f"(measured), so upstream's bf16 run {'is included' if bf16_fast else 'is left out'}; this suite's "
        f"automatic choice: {suite_precision()}.",
        "",
        f"Command: `python bench/bench.py --seeds {' '.join(map(str, options.seeds))} --epochs {options.epochs}`"
        f" ({time.strftime('%Y-%m-%d')}).",
        "",
        f"Training: packaged MiniLM, WNUT-16 ({options.limit or 1916:,} training sentences, "
        f"{subtokens // options.epochs:,} sub-tokens an epoch), {options.epochs} epochs, batch 16, learning rate "
        f"5e-5, seeds {', '.join(map(str, options.seeds))}.",
        "",
        "| side | training time (s) | sub-tokens/s | peak memory (MB) | eval F1 mean | F1 min-max | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['seconds']:.1f} | {subtokens / s['seconds']:,.0f} | {s['peak_mb']:,.0f} | "
                     f"{s['f1']:.4f} | {s['f1_min']:.4f}-{s['f1_max']:.4f} | {base / s['seconds']:.2f}x |")
    lines += [
        "",
        f"Speed-up of this suite over the upstream recipe: {base / ours['seconds']:.2f}x; over upstream's fastest "
        f"variant here ({best_upstream[1]}): {best_upstream[0] / ours['seconds']:.2f}x. F1 difference of the means: "
        f"{ours['f1'] - stats['upstream']['f1']:+.4f}.",
        "",
        "Per-seed F1: " + "; ".join(f"{name}: {', '.join(f'{v:.4f}' for v in s['all_f1'])}" for name, s in stats.items()),
        "",
        "## Prediction",
        "",
        f"{prediction['texts']} texts ({prediction['words']:,} words; {prediction['long']} of them documents of "
        "about 1,200 words, longer than the model maximum), after loading:",
        "",
        "| predictor | words/s |",
        "| --- | --- |",
        f"| run_ner.py --do_predict (tokenization, windows, batches, word decoding) | {prediction['ours']:,.0f} |",
        f"| transformers pipeline, aggregation first, stride 128, batch 8 | {prediction['pipeline']:,.0f} |",
        "",
        f"Ratio: {prediction['ours'] / prediction['pipeline']:.2f}x. Short texts whose entities agree with the "
        f"pipeline's: {prediction['agreement']:.1%}.",
        "",
        "## Decoding",
        "",
        "Validation F1 of the suite's three trained models (the training runs above) decoded both ways:",
        "",
        "| decoding | " + " | ".join(f"seed {seed}" for seed in options.seeds) + " | mean |",
        "| --- | " + " | ".join("---" for _ in options.seeds) + " | --- |",
        *[f"| {name} | " + " | ".join(f"{value:.4f}" for value in values) + f" | {statistics.mean(values):.4f} |"
          for name, values in decoding.items()],
        "",
        "## Evaluation memory",
        "",
        f"Peak memory of `run_ner.py --do_eval`: {memory[1]:,.0f} MB for the 239 validation sentences, "
        f"{memory[8]:,.0f} MB for eight times as many.",
        "",
    ]
    with open(options.results, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
