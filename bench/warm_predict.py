"""run_ner.py --do_predict as bench.py times it: `run_ner.main()` three times in one process, under a patched
sys.argv as upstream's example tests call it: on a few texts, then twice on the texts timed. The first timed
call pays what a fresh process pays for the shapes it meets first (on a GPU CUDA's libraries start, 0.35 s of
run_ner.py's 0.6 s for 8,214 words on the H100 of RESULTS.md; on a CPU in bf16 oneDNN builds a kernel for
each new matrix shape); the second runs as the tagger and the pipeline run in their fastest rounds, in a
process that has tagged these texts before.

    python bench/warm_predict.py MODEL WARM_UP.jsonl TIMED.jsonl OUTPUT_DIR BATCH_SIZE

The second timed call writes its predict_results.json and predictions to OUTPUT_DIR, the first to
OUTPUT_DIR-first, the warm-up to OUTPUT_DIR-warm-up.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import run_ner  # noqa: E402


def predict(model, path, output_dir, batch_size):
    sys.argv = ["run_ner.py", "--model_name_or_path", model, "--test_file", path, "--do_predict", "--output_dir",
                output_dir, "--per_device_eval_batch_size", batch_size, "--report_to", "none", "--disable_tqdm", "True"]
    run_ner.main()


if __name__ == "__main__":
    model, warm_up, timed, output_dir, batch_size = sys.argv[1:6]
    predict(model, warm_up, output_dir + "-warm-up", batch_size)
    predict(model, timed, output_dir + "-first", batch_size)
    predict(model, timed, output_dir, batch_size)
