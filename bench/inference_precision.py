#!/usr/bin/env python
"""Does bf16 inference keep a trained model's results? Word labels and entity F1 of one labelled CoNLL file,
decoded by the suite's own path (windows, accelerate's autocast, word decoding) in fp32 and in bf16.

    python bench/inference_precision.py --model output/wnut16-minilm --data data/wnut16/validation.conll

Prints the share of word labels that agree, both entity F1, how far the label probabilities moved (seqeval's default matching, as reported by
--do_eval). bf16 runs on any CPU (converted where the CPU has no bf16 instructions, only slower), with the
same rounding of inputs and weights, so the agreement measured here holds for CPUs with AMX as well.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def label_words(model_path, split, mixed_precision, decoding):
    """(labels, probabilities) of every word of `split`, with the model run under `mixed_precision`."""
    from torch.utils.data import DataLoader
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from nerkit.decoding import WordDecoder, collect_words, forward_batches
    from nerkit.labels import outside_label
    from nerkit.speed import fresh_accelerator
    from nerkit.tokenization import EncodingSettings, encode_split, load_fast_tokenizer, window_length
    from nerkit.workflow import longest_first

    tokenizer = load_fast_tokenizer(model_path, {})
    model = AutoModelForTokenClassification.from_pretrained(model_path).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    settings = EncodingSettings(window_length(tokenizer, model.config, None), 64)
    features = longest_first(encode_split(split, tokenizer, {}, settings))
    accelerator = fresh_accelerator(cpu=True, mixed_precision=mixed_precision)
    model = accelerator.prepare(model)
    loader = DataLoader(features.remove_columns(["word_ids", "example_id"]), batch_size=32,
                        collate_fn=DataCollatorForTokenClassification(tokenizer))
    decoder = WordDecoder(features, [len(words) for words in split.tokens], decoding)
    collect_words(forward_batches(model, accelerator.prepare(loader)), accelerator, decoder)
    return decoder.result(labels, outside_label(labels), split.name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained token-classification folder")
    parser.add_argument("--data", required=True, help="a labelled CoNLL file (the validation split)")
    parser.add_argument("--decoding", choices=["argmax", "viterbi"], default="viterbi")
    options = parser.parse_args()

    from seqeval.metrics import f1_score

    from nerkit.data import Split, parse_conll, read_text

    rows, _ = parse_conll(options.data, read_text(options.data))
    gold = [row["tags"] for row in rows]
    unlabelled = Split("validation", options.data, [row["tokens"] for row in rows], None, [""] * len(rows))
    fp32, fp32_probabilities = label_words(options.model, unlabelled, "no", options.decoding)
    bf16, bf16_probabilities = label_words(options.model, unlabelled, "bf16", options.decoding)
    words = sum(len(tags) for tags in gold)
    same = sum(a == b for doc_fp32, doc_bf16 in zip(fp32, bf16) for a, b in zip(doc_fp32, doc_bf16))
    f1_fp32, f1_bf16 = f1_score(gold, fp32), f1_score(gold, bf16)
    print(f"sentences {len(rows)}, words {words}, decoding {options.decoding}")
    print(f"word labels equal to fp32: {same}/{words} = {same / words:.4%}")
    print(f"entity F1: fp32 {f1_fp32:.4f}, bf16 {f1_bf16:.4f}, difference {f1_bf16 - f1_fp32:+.4f}")
    gaps = [abs(a - b) for doc_a, doc_b in zip(fp32_probabilities, bf16_probabilities) for a, b in zip(doc_a, doc_b)]
    print(f"probability of each word's label: mean difference {sum(gaps) / len(gaps):.5f}, largest {max(gaps):.5f}")
    print(f"entity changes: {sum(a != b for a, b in zip(fp32, bf16))} of {len(rows)} sentences differ")


if __name__ == "__main__":
    main()
