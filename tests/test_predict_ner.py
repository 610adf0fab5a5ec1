"""predict_ner.py: raw text in, entities with exact character offsets out."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import predict_ner
from conftest import ROOT, SENTENCES, examples, invalid_inside_tags, lean_towards, write_jsonl
from nerkit import speed
from test_run_ner import run

TEXTS = [words for words, _ in SENTENCES]


@pytest.fixture(scope="module")
def trained_model(tiny_bert, ner_files, tmp_path_factory):
    """A tiny BERT that has learned the fixture sentences (F1 close to 1 on them)."""
    return str(run(tiny_bert, tmp_path_factory.mktemp("predictor"), "--do_train", "--num_train_epochs", "8",
                   files={"train": ner_files["train"]}))


def predict(model, tmp_path, lines, *flags, name="input.txt"):
    source = tmp_path / name
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    predict_ner.main(predict_ner.parse_options(["--model", model, "--input", str(source), "--output", str(output),
                                                *flags]))
    with open(output, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_output_is_utf8_json_lines_whatever_the_console_and_line_separators_escaped(trained_model, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("Café\u2028 in Paris\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model,
                             "--input", str(source)], capture_output=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONIOENCODING="cp1252"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.decode("utf-8").splitlines()  # splitlines splits at U+2028 too
    assert len(lines) == 1 and json.loads(lines[0])["text"] == "Café\u2028 in Paris"


def test_input_and_output_problems_found_late_are_one_paragraph(trained_model, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "lone \\ud800 x"}\n', encoding="utf-8")
    with pytest.raises(predict_ner.UserError, match="line 1: the JSON string holds '.ud800', half of a character"):
        predict_ner.read_documents(str(bad), "auto")
    bad.write_text('{"text": "John lives"}\n{"id": "\\ud83d", "text": "John lives"}\n', encoding="utf-8")
    with pytest.raises(predict_ner.UserError, match="line 2: the JSON string holds '.ud83d', half of a character"):
        predict_ner.read_documents(str(bad), "auto")  # another field: written back, it would fail at the end
    array = tmp_path / "array.json"
    array.write_text('[{"text": "John lives in Paris"}]\n', encoding="utf-8")
    with pytest.raises(predict_ner.UserError, match="line 1: .* \\(this line is a JSON array: write one object per"):
        predict_ner.read_documents(str(array), "auto")
    conllu = tmp_path / "bad.conllu"
    conllu.write_text("1\tObama\n", encoding="utf-8")
    with pytest.raises(predict_ner.UserError, match="Read other column files with --format conll"):
        predict_ner.read_documents(str(conllu), "auto")

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict_ner, "write_atomic", disk_full)
    with pytest.raises(predict_ner.UserError, match="could not be written \\(No space left on device\\)"):
        predict_ner.write_records([{"text": "x", "entities": []}], str(tmp_path / "out.jsonl"))


def test_a_truncated_weights_file_is_one_paragraph(trained_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_model, broken)
    with open(broken / "model.safetensors", "r+b") as handle:
        handle.truncate(2000)
    with pytest.raises(predict_ner.UserError, match="model.safetensors cannot be read .*the model folder \\(--model\\) "
                                                    "is damaged") as refused:
        predict_ner.Tagger(str(broken), None, 64, None, "viterbi")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("script", ["run_ner.py", "predict_ner.py"])
@pytest.mark.parametrize("contents", [[], ["train.json"]])
def test_a_folder_without_a_config_is_not_called_a_tokenizer_problem(script, contents, tmp_path):
    """An empty folder, or a data folder given as the model: transformers would speak of sentencepiece."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("{}\n", encoding="utf-8")
    train = write_jsonl(tmp_path / "train.json", examples(4))
    argv = (["--model_name_or_path", str(folder), "--train_file", train, "--do_train",
             "--output_dir", str(tmp_path / "out")] if script == "run_ner.py" else
            ["--model", str(folder), "--input", str(tmp_path / "in.txt")])
    (tmp_path / "in.txt").write_text("John lives in Paris\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    flag = "--model_name_or_path" if script == "run_ner.py" else "--model"
    holds = "it holds train.json" if contents else "it is empty"
    assert result.returncode == 2 and result.stderr.startswith(f"error: {folder} ({flag}) has no config.json"), \
        result.stderr[-2000:]
    assert holds in result.stderr and "sentencepiece" not in result.stderr


def test_a_loop_checkpoint_given_as_the_model_is_told_for_what_it_is(tmp_path):
    """The loop's step_N folder holds weights but no config: the message names the run's folder to give."""
    from nerkit.modeling import check_model_folder

    checkpoint = tmp_path / "run" / "step_10"
    checkpoint.mkdir(parents=True)
    for name in ("loop_state.json", "model.safetensors", "optimizer.bin"):
        (checkpoint / name).write_bytes(b"")
    with pytest.raises(predict_ner.UserError, match="is a checkpoint of run_ner_no_trainer.py") as refusal:
        check_model_folder(str(checkpoint), "--model")
    assert f"Give the run's output folder ({tmp_path / 'run'})" in str(refusal.value)


@pytest.mark.parametrize("text, words", [
    ("John's car", ["John", "'", "s", "car"]),
    ("@jess_robbo met Jones_Drew32", ["@", "jess", "_", "robbo", "met", "Jones", "_", "Drew32"]),  # as BERT's
    ("शाहरुख़ खान", ["शाहरुख़", "खान"]),  # combining vowel signs and nukta stay in the word
    ("Zu\u0308rich", ["Zu\u0308rich"]),  # decomposed (NFD) ü
    ("می\u200cخواهم", ["می\u200cخواهم"]),  # a zero-width non-joiner inside a Persian word
    ("東京都に住む", ["東", "京", "都", "に", "住", "む"]),  # ideographs alone, as BERT's tokenizer splits them
    ("🇺🇸 👍🏽 👨\u200d👩\u200d👧", ["🇺🇸", "👍🏽", "👨\u200d👩\u200d👧"]),  # emoji sequences whole
    ("a\u200bb\ufeffc", ["a", "b", "c"]),  # invisible format characters separate words
    # an ideograph keeps its variation selector (Japanese names) and combining marks
    ("渡邉\U000E0101さん 葛\U000E0100城 東\u0301", ["渡", "邉\U000E0101", "さん", "葛\U000E0100", "城", "東\u0301"]),
    ("ᠬᠠ\u180eᠠ foo\u2060bar", ["ᠬᠠ\u180eᠠ", "foo\u2060bar"]),  # Mongolian vowel separator, word joiner
])
def test_words_of_every_script_stay_whole(text, words):
    found, offsets = predict_ner.split_words({"text": text}, "words")
    assert found == words and [text[start:end] for start, end in offsets] == words


def test_json_lines_keep_their_other_fields_and_are_told_on_standard_input(trained_model, tmp_path):
    lines = [json.dumps({"id": 7, "text": TEXTS[0]}), json.dumps({"id": 8, "tokens": TEXTS[1].split(),
                                                                  "entities": "replaced"})]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["id"] for record in records] == [7, 8]  # read as JSON Lines, not as two lines of prose
    assert records[0]["text"] == TEXTS[0] and isinstance(records[1]["entities"], list)
    assert predict_ner.looks_like_json_lines(['{"text": "a"}', "", '{"tokens": ["b"]}'])
    assert not predict_ner.looks_like_json_lines(['{"text": "a"}', "Hello {world}"])


def test_an_input_without_text_writes_an_empty_output_with_a_warning_and_loads_no_model(tmp_path, monkeypatch,
                                                                                         caplog):
    """No input line, no output line (a blank line is a document and gets its line: see below)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for an empty input")

    monkeypatch.setattr(predict_ner, "Tagger", refuse)
    # a CoNLL file without a sentence too (an empty one, or one of -DOCSTART- alone), as a batch job may get
    for name, content in (("empty.txt", ""), ("empty.conll", ""), ("docstart.conll", "-DOCSTART- O\n\n"),
                          ("empty.conllu", "# a comment\n")):
        source, output = tmp_path / name, tmp_path / f"{name}.jsonl"
        source.write_text(content, encoding="utf-8")
        predict_ner.main(predict_ner.parse_options(["--model", str(tmp_path / "no-model-needed"), "--input",
                                                    str(source), "--output", str(output)]))
        assert output.read_text(encoding="utf-8") == ""
        assert f"{source} holds no text: nothing to tag" in caplog.text


def test_output_to_dev_stdout_reaches_a_pipe(trained_model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("Peter Blackburn reported from Brussels\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model, "--input",
                             str(source), "--output", "/dev/stdout"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["text"] == "Peter Blackburn reported from Brussels"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_standard_output_that_cannot_be_written_is_one_paragraph(trained_model, tmp_path):
    """A full disk behind standard output, or standard output closed (>&-): a message and status 2."""
    source = tmp_path / "in.txt"
    source.write_text("Peter Blackburn reported from Brussels\n", encoding="utf-8")
    command = [sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model, "--input", str(source)]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: Standard output could not be written (No space left on device)" in result.stderr
    closed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2 and "error: Standard output is closed" in closed.stderr, closed.stderr[-2000:]
    # a disk that fills part way through: the write takes part of the output, and the rest fails
    import resource

    source.write_text("Peter Blackburn reported from Brussels\n" * 200, encoding="utf-8")
    with open(tmp_path / "out.jsonl", "w") as cut:
        limited = subprocess.run(command, stdout=cut, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert limited.returncode == 2 and "error: Standard output could not be written (File too large)" in \
        limited.stderr, limited.stderr[-2000:]


def test_entities_have_exact_character_offsets(trained_model, tmp_path):
    records = predict(trained_model, tmp_path, TEXTS, "--words")
    assert len(records) == len(TEXTS)
    for record, text in zip(records, TEXTS):
        assert record["text"] == text and len(record["labels"]) == len(record["words"]) == len(text.split())
        for entity in record["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]
            assert 0.0 <= entity["score"] <= 1.0
    assert any(entity["text"] == "John Smith" and entity["type"] == "PER" for entity in records[0]["entities"])


def test_words_are_split_off_punctuation(trained_model, tmp_path):
    text = "Mary visited Paris,Berlin and New York!"
    record = predict(trained_model, tmp_path, [text], "--words")[0]
    assert record["words"] == ["Mary", "visited", "Paris", ",", "Berlin", "and", "New", "York", "!"]
    for entity in record["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]


def test_json_lines_with_text_or_tokens(trained_model, tmp_path):
    lines = [json.dumps({"text": TEXTS[0]}), json.dumps({"tokens": TEXTS[1].split()})]
    records = predict(trained_model, tmp_path, lines, name="input.jsonl")
    assert [r["text"] for r in records] == [TEXTS[0], TEXTS[1]]


def test_whitespace_words_of_a_tokens_list_are_tagged_as_in_conll(trained_model, tmp_path):
    # spaCy writes a run of spaces or a line break as a token of its own
    tokens = ["John", "Smith", "  ", "lives", "\n", "here", "\u00a0"]
    record = predict(trained_model, tmp_path, [json.dumps({"tokens": tokens})], "--words", name="input.jsonl")[0]
    assert record["words"] == tokens and len(record["labels"]) == len(tokens)
    assert record["labels"][2] == record["labels"][4] == record["labels"][6] == "O"
    for entity in record["entities"]:
        assert record["text"][entity["start"]:entity["end"]] == entity["text"]
    conll = tmp_path / "input.conll"
    conll.write_text("John\tO\n\u00a0\tO\nSmith\tO\n", encoding="utf-8")
    assert predict_ner.read_documents(str(conll), "auto") == [{"tokens": ["John", "\u00a0", "Smith"]}]
    with pytest.raises(predict_ner.UserError, match="line 1: expected an object"):
        predict_ner.json_document(json.dumps({"tokens": ["John", ""]}), "input.jsonl", 1)

def test_a_word_without_sub_tokens_does_not_lower_its_entitys_score(trained_model, tmp_path):
    """A zero-width space inside a name gets its entity's inside label from its neighbours and a score of 0,
    which the entity's mean leaves out."""
    tokens = ["John", "\u200b", "Smith", "works", "at", "Acme"]
    record = predict(trained_model, tmp_path, [json.dumps({"tokens": tokens})], "--words", name="input.jsonl")[0]
    assert record["labels"][:3] == ["B-PER", "I-PER", "I-PER"] and record["scores"][1] == 0
    person = next(entity for entity in record["entities"] if entity["type"] == "PER")
    assert person["score"] == pytest.approx((record["scores"][0] + record["scores"][2]) / 2, abs=1e-6)


def test_old_mac_line_ends_separate_sentences_and_lines_as_the_training_scripts_read_them(tmp_path):
    conll = tmp_path / "input.conll"
    conll.write_bytes(b"John\tB-PER\rSmith\tI-PER\r\rMary\tB-PER\r")
    assert predict_ner.read_documents(str(conll), "auto") == [{"tokens": ["John", "Smith"]}, {"tokens": ["Mary"]}]
    text = tmp_path / "input.txt"
    text.write_bytes(b"John lives here\rMary too\r")
    assert predict_ner.read_documents(str(text), "auto") == [{"text": "John lives here"}, {"text": "Mary too"}]
    text.write_bytes(b"John\rlives\nMary\n")  # with "\n" line ends, a lone "\r" stays inside its line
    assert predict_ner.read_documents(str(text), "auto") == [{"text": "John\rlives"}, {"text": "Mary"}]

def test_long_document_goes_through_windows(trained_model, tmp_path):
    document = " ".join(TEXTS * 12)  # about 580 words, far past the 64-sub-token window
    record = predict(trained_model, tmp_path, [document], "--words", "--max_length", "32")[0]
    assert len(record["labels"]) == len(document.split())
    assert sum(entity["text"] == "John Smith" for entity in record["entities"]) >= 10


def test_agrees_with_the_pipeline_where_the_pipeline_is_right(trained_model, tmp_path):
    from seqeval.metrics.sequence_labeling import get_entities
    from transformers import pipeline

    tagger = pipeline("token-classification", model=trained_model, aggregation_strategy="first")
    ours = predict(trained_model, tmp_path, TEXTS, "--decoding", "argmax")  # the pipeline decodes by argmax
    compared = 0
    for (words, tags), record in zip(SENTENCES, ours):
        gold = sorted((kind, " ".join(words.split()[s:e + 1])) for kind, s, e in get_entities(tags.split()))
        theirs = [(e["entity_group"], e["start"], e["end"]) for e in tagger(words)]
        if sorted((kind, words[s:e]) for kind, s, e in theirs) != gold:
            continue  # the pipeline is wrong here: nothing to agree with
        compared += 1
        assert sorted((e["type"], e["start"], e["end"]) for e in record["entities"]) == sorted(theirs)
    assert compared >= 3


def test_standard_input(trained_model):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model,
                             "--words"], input=TEXTS[3] + "\n", capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert len(record["words"]) == len(record["labels"]) == len(TEXTS[3].split())


@pytest.mark.parametrize("decoding", ["viterbi", "argmax"])
def test_viterbi_gives_valid_sequences_where_argmax_does_not(trained_model, tmp_path, monkeypatch, decoding):
    # every sub-token leans to I-PER: argmax puts it at text starts and after O, which IOB2 forbids
    original = predict_ner.load_pretrained

    def leaning(auto_class, name, **kwargs):
        loaded = original(auto_class, name, **kwargs)
        return (lean_towards(loaded[0], "I-PER"), loaded[1]) if isinstance(loaded, tuple) else loaded
    monkeypatch.setattr(predict_ner, "load_pretrained", leaning)
    records = predict(trained_model, tmp_path, TEXTS, "--decoding", decoding, "--words")
    invalid = [invalid_inside_tags(record["labels"]) for record in records]
    if decoding == "viterbi":
        assert not any(invalid) and all("I-PER" in record["labels"] for record in records)
    else:
        assert all(invalid)


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b'{"txt": 1}\n', "'text' string"),
                                              (b"ok\ncaf\xe9 au lait\n", "line 2: the file is not valid UTF-8"),
                                              ("caf\u00e9\n".encode("utf-16"), "is UTF-16 text")])
def test_bad_input_is_a_clear_error(trained_model, tmp_path, content, message):
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_bytes(content)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model,
                             "--input", str(path)], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_the_training_scripts_spellings_give_the_same_output(trained_model, tmp_path):
    document = " ".join(TEXTS * 4)
    short = predict(trained_model, tmp_path, [document], "--words", "--max_length", "16", "--batch_size", "2")
    source, output = tmp_path / "input.txt", tmp_path / "long.jsonl"
    predict_ner.main(predict_ner.parse_options(["--model_name_or_path", trained_model, "--input", str(source),
                                                "--output", str(output), "--words", "--max_seq_length", "16",
                                                "--per_device_eval_batch_size", "2"]))
    assert [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()] == short
    default = predict(trained_model, tmp_path, [document], "--words")
    assert default[0]["scores"] != short[0]["scores"]  # the window length did take effect


def test_one_output_line_per_input_line(trained_model, tmp_path):
    lines = [TEXTS[0], "", "Mary visited Paris\u2028and Berlin", "EU rejects\x0cGerman call\x85to boycott", "  ",
             TEXTS[3]]
    records = predict(trained_model, tmp_path, lines)
    assert [record["text"] for record in records] == lines
    assert records[1]["entities"] == [] and records[4]["entities"] == []
    jsonl = [json.dumps({"text": lines[2]}, ensure_ascii=False), "", json.dumps({"tokens": ["EU", "rejects"]})]
    records = predict(trained_model, tmp_path, jsonl, name="input.jsonl")
    assert [record["text"] for record in records] == [lines[2], "", "EU rejects"]


def test_windows_line_ends(trained_model, tmp_path):
    source, output = tmp_path / "input.txt", tmp_path / "out.jsonl"
    source.write_bytes(f"{TEXTS[0]}\r\n\r\n{TEXTS[1]}\r\n".encode())
    predict_ner.main(predict_ner.parse_options(["--model", trained_model, "--input", str(source), "--output",
                                                str(output)]))
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").split("\n") if line]
    assert [record["text"] for record in records] == [TEXTS[0], "", TEXTS[1]]


def test_conll_input_is_tagged_sentence_by_sentence(trained_model, tmp_path):
    """A CoNLL file's words (first column), one output line per sentence; the same words as JSON Lines
    `tokens` give the same output. A CoNLL file named .txt would be tagged line by line as text: refused."""
    rows = []
    for words, tags in SENTENCES[:3]:
        rows += [f"{word}\t{tag}" for word, tag in zip(words.split(), tags.split())] + [""]
    records = predict(trained_model, tmp_path, ["-DOCSTART-\tO", "", *rows], "--words", name="test.conll")
    assert [record["words"] for record in records] == [words.split() for words, _ in SENTENCES[:3]]
    tokens = [json.dumps({"tokens": words.split()}) for words, _ in SENTENCES[:3]]
    assert predict(trained_model, tmp_path, tokens, "--words", name="input.jsonl") == records
    source = tmp_path / "test.txt"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model,
                             "--input", str(source)], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and "--format conll" in result.stderr and "Traceback" not in result.stderr
    assert predict(trained_model, tmp_path, rows, "--format", "conll", name="test.txt") == [
        {key: record[key] for key in ("text", "entities")} for record in records]


def test_a_model_whose_tokenizer_has_no_padding_token(tmp_path):
    """GPT-2's tokenizer has no padding token: batches of texts of different lengths are padded with its
    end-of-text token, and every word gets a label."""
    from tiny_models import build_tiny_gpt2

    model = build_tiny_gpt2(tmp_path / "gpt2", labels=["O", "B-PER", "I-PER"])
    records = predict(model, tmp_path, TEXTS, "--words", "--batch_size", "4")
    assert [len(record["labels"]) for record in records] == [len(text.split()) for text in TEXTS]
    assert {label for record in records for label in record["labels"]} <= {"O", "B-PER", "I-PER"}


def test_a_log_written_to_a_pipe_has_no_progress_bars(trained_model, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXTS * 30) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", trained_model,
                             "--input", str(source)], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == len(TEXTS) * 30
    assert "%|" not in result.stderr and "\r" not in result.stderr, result.stderr[-2000:]


def test_a_model_without_a_trained_classifier_is_refused(tiny_bert):
    """A masked-LM checkpoint would tag with a random head and labels LABEL_0, LABEL_1, ..."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", tiny_bert],
                            input="EU rejects German call\n", capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and "not a trained token-classification model" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_int8_tags_through_quantized_linear_layers_with_the_same_entities(trained_model, tmp_path, monkeypatch):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    calls = []
    original = predict_ner.Tagger.__init__

    def watch(tagger, *args, **kwargs):  # record what really runs: which layers, how often
        original(tagger, *args, **kwargs)
        modules = list(tagger.model.modules())
        calls.append([type(module).__name__ for module in modules if isinstance(module, torch.nn.Linear)])
        for module in modules:
            if isinstance(module, Int8Linear):
                module.register_forward_hook(lambda module, inputs, output: calls.append(output.dtype))

    monkeypatch.setattr(predict_ner.Tagger, "__init__", watch)
    fp32 = predict(trained_model, tmp_path, TEXTS, "--words")
    monkeypatch.setattr(speed, "accelerator_type", lambda: None)  # on a machine with a GPU too
    int8 = predict(trained_model, tmp_path, TEXTS, "--words", "--int8")
    assert calls[0] and calls[1] == []  # fp32: plain linear layers; int8: none left
    assert calls[2:] and set(calls[2:]) == {torch.float32}  # quantized layers ran, their outputs fp32
    labels = [(a["labels"], b["labels"]) for a, b in zip(fp32, int8)]
    same = sum(x == y for a, b in labels for x, y in zip(a, b)) / sum(len(a) for a, _ in labels)
    assert same >= 0.9, labels
    assert any(entity["text"] == "John Smith" and entity["type"] == "PER" for entity in int8[0]["entities"])


@pytest.mark.parametrize("device, precision, message", [
    ("cuda", "no", "--int8 tags on the CPU"), (None, "bf16", "accelerate launch's mixed precision (bf16)")])
def test_int8_is_refused_where_it_cannot_run(trained_model, monkeypatch, device, precision, message):
    from nerkit.errors import UserError

    monkeypatch.setattr(speed, "accelerator_type", lambda: device)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", precision)
    monkeypatch.setattr(predict_ner, "load_fast_tokenizer", lambda *args: pytest.fail("loaded before refusing"))
    with pytest.raises(UserError, match=re.escape(message)):
        predict_ner.Tagger(trained_model, None, 64, 8, "viterbi", int8=True)


def test_length_batches_end_where_lengths_halve():
    from nerkit.workflow import length_batches

    lengths = [512, 512, 510, 406, 91, 75, 62, 61, 58, 40, 30, 29, 14, 3]
    batches = length_batches(lengths, 4)
    assert [index for batch in batches for index in batch] == list(range(len(lengths)))  # every one, in order
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12], [13]]
    assert length_batches([], 8) == [] and length_batches([5] * 9, 8) == [list(range(8)), [8]]


def test_short_texts_are_not_padded_to_a_long_documents_windows(trained_model, monkeypatch):
    widths = []
    tagger = predict_ner.Tagger(trained_model, 32, 8, 8, "viterbi")
    tagger.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["attention_mask"].sum(1).tolist()), with_kwargs=True)
    document = " ".join(TEXTS * 6).split()  # windows of 32 sub-tokens
    words = [document, *[text.split() for text in TEXTS]]
    tags, _ = tagger.tag(words)
    assert any(max(batch) == 32 for batch in widths)
    assert all(2 * min(batch) >= max(batch) for batch in widths), widths  # no batch of windows and sentences
    alone = [tagger.tag([text])[0][0] for text in words]  # the labels do not depend on the batching
    assert tags == alone


def test_a_tab_separated_text_file_is_refused_as_conll_unless_format_text_says_so(tmp_path):
    from nerkit.errors import UserError

    path = tmp_path / "tabs.txt"
    path.write_text("John\tB-PER\nlives\tO\n")
    with pytest.raises(UserError, match="looks like a CoNLL column file"):
        predict_ner.read_documents(str(path), "auto")
    assert predict_ner.read_documents(str(path), "text") == [{"text": "John\tB-PER"}, {"text": "lives\tO"}]
    assert predict_ner.read_documents(str(path), "conll") == [{"tokens": ["John", "lives"]}]


def test_without_batch_size_the_tagger_takes_the_devices_default(trained_model, monkeypatch, on_the_cpu):
    sizes = []
    monkeypatch.setattr(speed, "inference_batch_size", lambda device_type, precision: {"cpu": 3}.get(device_type, 99))
    tagger = predict_ner.Tagger(trained_model, None, 64, None, "viterbi")
    tagger.model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(len(kwargs["input_ids"])),
                                           with_kwargs=True)
    words = [text.split() for text in TEXTS] * 3
    tags, _ = tagger.tag(words)
    assert tagger.batch_size == 3 and max(sizes) == 3 and sum(sizes) == len(words)
    assert tags == predict_ner.Tagger(trained_model, None, 64, 1, "viterbi").tag(words)[0]
    assert predict_ner.parse_options(["--model", trained_model]).batch_size is None


def test_the_default_batch_is_small_on_a_cpu_in_fp32_and_large_in_bf16_or_on_a_gpu(trained_model, monkeypatch,
                                                                                   on_the_cpu):
    assert speed.inference_batch_size("cpu") == 8 and speed.inference_batch_size("cuda") == 32
    assert speed.inference_batch_size("cpu", "bf16") == 32
    for forced, expected in (("fp32", 8), ("bf16", 32)):  # the tagger asks with the precision it really runs in
        monkeypatch.setenv("NERKIT_AUTO_PRECISION", forced)
        tagger = predict_ner.Tagger(trained_model, None, 64, None, "viterbi")
        assert tagger.accelerator.mixed_precision == ("bf16" if forced == "bf16" else "no")
        assert tagger.batch_size == expected


def refused(*flags, prefix=()):
    """Run predict_ner.py with `flags` (its --model a folder that does not exist, so a refusal that came
    after the model would load says so instead); assert a refusal and return its message."""
    command = [*prefix, sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", "/no/such/model", *flags]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "/no/such/model" not in result.stderr and result.stdout == ""
    return " ".join(result.stderr.split())  # one paragraph, whatever the wrapping


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text(TEXTS[0] + "\n", encoding="utf-8")
    message = refused("--input", str(source), "--output", str(source))
    assert "same file as --input" in message and f"--output {source}" in message
    (tmp_path / "link.jsonl").symlink_to(source)  # another name for the same file
    with pytest.raises(predict_ner.UserError, match="same file as --input"):
        predict_ner.parse_options(["--model", "m", "--input", str(source), "--output", str(tmp_path / "link.jsonl")])
    assert source.read_text(encoding="utf-8") == TEXTS[0] + "\n"


@pytest.mark.parametrize("name, content, words", [
    ("folder", None, ["--input", "is a folder", "takes one file"]),
    ("table.parquet", b"PAR1\x15\x04", ["does not read .parquet files", "JSON Lines", "--format"]),
    ("table.csv", b'tokens,ner_tags\n"[""EU""]","[""B-ORG""]"\n', ["does not read .csv files", "CoNLL-U"]),
])
def test_an_input_of_a_kind_it_does_not_read_is_refused(tmp_path, name, content, words):
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    message = refused("--input", str(path))
    assert str(path) in message and all(word in message for word in words), message


def test_a_table_named_as_text_by_format_is_read_as_lines(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("EU rejects German call\n", encoding="utf-8")
    assert predict_ner.read_documents(str(path), "text") == [{"text": "EU rejects German call"}]


def unprivileged():
    """A command prefix under which file permissions hold: root ignores them unless it drops its capabilities."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to hold")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


@pytest.mark.parametrize("case", ["unreadable input", "read-only output folder", "output under a read-only folder"])
def test_files_without_permission_are_refused_before_the_model_loads(tmp_path, case):
    source, locked = tmp_path / "input.txt", tmp_path / "locked"
    source.write_text(TEXTS[0] + "\n", encoding="utf-8")
    locked.mkdir()
    output = locked / ("out.jsonl" if case == "read-only output folder" else "new/out.jsonl")
    (source if case == "unreadable input" else locked).chmod(0o000 if case == "unreadable input" else 0o555)
    try:
        if case == "unreadable input":
            message = refused("--input", str(source), prefix=unprivileged())
            assert f"The input file {source} cannot be read (Permission denied)" in message
        else:
            message = refused("--input", str(source), "--output", str(output), prefix=unprivileged())
            assert f"--output {output} cannot be written" in message and f"the folder {locked} " in message
    finally:
        source.chmod(0o644), locked.chmod(0o755)
    assert not any(locked.iterdir())


def test_an_input_that_cannot_be_read_names_the_file(tmp_path, monkeypatch):
    """The same without depending on who runs the tests: open() fails as it does for a file without read
    permission."""
    def forbidden(path, *args):
        raise PermissionError(13, "Permission denied", path)

    path = tmp_path / "input.txt"
    path.write_text("EU rejects German call\n", encoding="utf-8")
    monkeypatch.setattr(predict_ner, "open", forbidden, raising=False)
    with pytest.raises(predict_ner.UserError, match=re.escape(f"The input file {path} cannot be read (Permission")):
        predict_ner.read_documents(str(path), "auto")


def test_an_output_in_folders_still_to_be_made_is_accepted(tmp_path):
    options = predict_ner.parse_options(["--model", "m", "--output", str(tmp_path / "new" / "deeper" / "out.jsonl")])
    predict_ner.check_options(options)  # write_atomic makes the folders: only tmp_path must be writable


@pytest.mark.parametrize("lines, conll", [
    (["John B-PER", "Smith I-PER", "works O", "", "Mary B-PER", "left O"], True),  # spaces, as run_ner.py reads
    (["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "rejects VBZ B-VP O"], True),  # CoNLL-2003's four columns
    (["John\tB-PER", "lives\tO"], True),  # tabs
    (["John\tNNP", "lives\tVBZ"], True),  # tabs need no tags: prose rarely holds them
    (["Hello world", "Good night", "", "See you"], False),  # two-word prose
    (["Plan B", "Vitamin C"], False),  # B alone is no tag
    (["Hello O", "Oh O"], False),  # no entity tag anywhere
    (["We flew a B-52"], False),  # one line ending in something tag-shaped
    (["John B-PER", "lives in Paris O"], False),  # lines of different widths
    (["John", "Smith"], False),  # one column
])
def test_conll_files_are_told_from_prose(lines, conll):
    assert predict_ner.looks_like_conll(lines) is conll


@pytest.mark.parametrize("lines, labels, conll", [
    (["The DT", "cat NN", "sat VBD"], {"DT", "NN", "VBD", "IN"}, True),  # POS tags: the model's labels
    (["The DT", "cat NN", "sat VBD"], set(), False),  # the same, for a model whose labels are unknown
    (["Hello O", "Oh O"], {"O", "B-PER", "I-PER"}, True),  # only O, but the model tags O
    (["Hello world", "Good night"], {"DT", "NN"}, False),  # prose ending in no label
    (["Hello NN", "world DT", "Good night"], {"DT", "NN"}, False),  # not every line ends in one
])
def test_the_models_labels_tell_conll_files_from_prose(lines, labels, conll):
    assert predict_ner.looks_like_conll(lines, frozenset(labels)) is conll


def test_many_lines_ending_in_o_alone_read_as_a_tagged_file():
    lines = [f"word{i} O" for i in range(predict_ner.ALL_O_LINES)]
    assert predict_ner.looks_like_conll(lines)
    assert not predict_ner.looks_like_conll(lines[:-1])


def test_the_labels_come_from_a_model_folders_config_before_it_loads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "NN", "1": "DT"}}), encoding="utf-8")
    assert predict_ner.saved_labels(str(tmp_path)) == {"NN", "DT"}
    assert predict_ner.saved_labels(str(tmp_path / "missing")) == frozenset()
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    assert predict_ner.saved_labels(str(tmp_path)) == frozenset()


def test_a_pos_tagged_text_file_is_refused_for_a_pos_model(tmp_path):
    model = tmp_path / "pos-model"  # config.json only: the refusal comes before anything else is read
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"id2label": {"0": "DT", "1": "NN", "2": "VBD"}}), encoding="utf-8")
    path = tmp_path / "tagged.txt"
    path.write_text("The DT\ncat NN\nsat VBD\n", encoding="utf-8")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", str(model), "--input",
                             str(path)], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert "looks like a CoNLL column file" in result.stderr and "--format conll" in result.stderr


def test_a_space_separated_conll_text_file_is_refused_unless_format_says_what_it_is(tmp_path):
    path = tmp_path / "spaces.txt"
    path.write_text("John B-PER\nSmith I-PER\n\nMary B-PER\n", encoding="utf-8")
    message = refused("--input", str(path))
    assert "looks like a CoNLL column file" in message and "--format conll" in message
    assert predict_ner.read_documents(str(path), "conll") == [{"tokens": ["John", "Smith"]}, {"tokens": ["Mary"]}]
    assert predict_ner.read_documents(str(path), "text")[0] == {"text": "John B-PER"}


@pytest.mark.parametrize("architectures, labels, refused_early", [
    (["BertForMaskedLM"], None, True),  # a pretrained base: no head, placeholder labels
    (["BertModel"], None, True),
    (["BertForTokenClassification"], None, False),  # a head without names: the weights decide
    (["BertForMaskedLM"], ["O", "B-PER", "I-PER"], False),  # names but no head: the weights decide
    (None, None, False),  # a config that names no architecture
])
def test_a_model_without_a_head_is_told_by_its_config(architectures, labels, refused_early):
    from transformers import BertConfig

    config = BertConfig(architectures=architectures, **({"id2label": dict(enumerate(labels))} if labels else {}))
    if refused_early:
        with pytest.raises(predict_ner.UserError, match="not a trained token-classification model.*config.json"):
            predict_ner.check_trained_head(config, "base")
    else:
        predict_ner.check_trained_head(config, "base")


def test_a_masked_lm_checkpoint_is_refused_before_its_weights_load(tiny_bert, monkeypatch):
    from transformers import AutoModelForTokenClassification

    monkeypatch.setattr(AutoModelForTokenClassification, "from_pretrained",
                        lambda *args, **kwargs: pytest.fail("the weights loaded before the refusal"))
    with pytest.raises(predict_ner.UserError, match="names the architecture BertForMaskedLM and no labels"):
        predict_ner.Tagger(tiny_bert, None, 64, 8, "viterbi")


@pytest.mark.parametrize("slow", [False, True])
def test_a_tokenizer_problem_names_only_flags_predict_ner_has(tiny_bert, tmp_path, slow):
    """A folder without tokenizer files, or with a slow-only tokenizer (ByT5's has no fast version): the
    advice names --model."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_bert, "config.json"), folder)
    if slow:
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer"}))
    with pytest.raises(predict_ner.UserError, match="holds no tokenizer" if not slow else "not a fast") as error:
        predict_ner.Tagger(str(folder), None, 64, 8, "viterbi")
    assert "--model" in str(error.value) and "--tokenizer_name" not in str(error.value), str(error.value)


def test_help_shows_every_option_and_the_readme_names_each():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--help"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.startswith("usage: predict_ner.py")
    flags = re.findall(r"^  (--\w+)", result.stdout, flags=re.MULTILINE)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme[readme.index("## Tagging raw text: predict_ner.py"):]
    section = section[:section.index("\n## ", 1)]
    assert len(flags) > 8 and [flag for flag in flags if f"`{flag}" not in section] == []


def test_several_processes_are_refused_before_the_model_loads(trained_model, tmp_path, monkeypatch):
    """Under torchrun each process tagged every document and wrote it: each output line came twice."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(predict_ner, "load_fast_tokenizer", lambda *args: pytest.fail("loaded before refusing"))
    with pytest.raises(predict_ner.UserError, match="predict_ner.py tags in one process, and this launch started 2"):
        predict(trained_model, tmp_path, TEXTS)


def test_a_reader_that_stops_early_ends_the_output_quietly(trained_model, tmp_path):
    """`| head -1`: the rest of the output has nowhere to go, which is no error (a traceback since the output
    is written to the last byte)."""
    source = tmp_path / "in.txt"
    source.write_text("Peter Blackburn reported from Brussels\n" * 3000, encoding="utf-8")
    command = f"{sys.executable} predict_ner.py --model {trained_model} --input {source} | head -1; " \
              "echo status ${PIPESTATUS[0]} >&2"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.rstrip().endswith("status 0")
