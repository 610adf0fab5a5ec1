"""A hub that does not answer: models named by hub id come from the local cache at once, and a push is refused
before anything loads."""

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, examples, write_jsonl
from nerkit.hub import hub_names, unanswered
from tiny_models import build_tiny_bert

REPO = "nerkit-tests/tiny-tagger"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_hub(cache):
    """The environment of a machine whose hub does not answer, without HF_HUB_OFFLINE."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return dict(env, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(cache))


@pytest.fixture(scope="module")
def cached_tagger(tmp_path_factory):
    """A token-classification model that exists only in a hub cache, under REPO, as a download leaves it."""
    cache = tmp_path_factory.mktemp("hub-cache")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    build_tiny_bert(repo / "snapshots" / REVISION, labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return cache


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    """The address of a local HTTP server answering with `handler` (a QuietHandler), for the time inside."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def endpoint_answering(status):
    """A local endpoint whose every HEAD gets `status`."""
    class Answer(QuietHandler):
        def do_HEAD(self):
            self.send_response(status)
            self.end_headers()

    return serving(Answer)


def test_a_client_error_is_an_answer_and_silence_or_a_server_error_is_not(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests' own setting (conftest)
    with endpoint_answering(404) as endpoint:
        assert unanswered(endpoint, timeout=5) is None
    with endpoint_answering(503) as endpoint:  # an outage: huggingface_hub would retry every file
        assert unanswered(endpoint, timeout=5) == "HTTP 503"
    failure = unanswered(f"http://127.0.0.1:{closed_port()}", timeout=5)
    assert failure and "Connect" in failure


def test_only_names_that_are_not_local_paths_go_to_the_hub(tmp_path):
    assert hub_names("bert-base-cased", str(tmp_path), None, "", str(tmp_path / "missing"), "./gone",
                     "bert-base-cased") == ["bert-base-cased"]


def test_a_cached_model_tags_at_once_when_the_hub_does_not_answer(cached_tagger, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("John Smith lives in Paris .\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "predict_ner.py"), "--model", REPO, "--input",
                             str(source), "--output", str(output), "--words"], capture_output=True, text=True, cwd=ROOT,
                            env=unreachable_hub(cached_tagger))
    assert result.returncode == 0, result.stderr[-2000:]
    logged = result.stdout + result.stderr
    assert "Hugging Face Hub cannot be reached" in logged and REPO in logged
    assert "Retry" not in logged  # huggingface_hub's backoff never started
    assert len(json.loads(output.read_text())["labels"]) == 6


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_a_push_is_refused_before_anything_loads(script, tiny_bert, tmp_path):
    train = write_jsonl(tmp_path / "train.json", examples(8))
    output_dir = tmp_path / "out"
    flags = ["--do_train"] if script == "run_ner.py" else []
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), "--model_name_or_path", tiny_bert,
                             "--train_file", train, "--output_dir", str(output_dir), "--push_to_hub", *flags],
                            capture_output=True, text=True, cwd=ROOT, env=unreachable_hub(tmp_path / "cache"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--push_to_hub needs the Hugging Face Hub" in result.stderr and "does not answer" in result.stderr
    assert "Traceback" not in result.stderr and "cannot be reached" not in result.stdout  # the refusal alone
    assert not output_dir.exists()


def hub_answering(whoami, creates, uploads=500):
    """A local hub that answers: `whoami` is the status of /api/whoami-v2 (200 with a user, or 401 as for a
    missing or bad token), `creates` that of creating a repository, `uploads` that of every other POST."""
    class Hub(QuietHandler):
        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_HEAD(self):
            self.answer(200, {})

        def do_GET(self):
            if self.path.startswith("/api/whoami"):
                self.answer(whoami, {"name": "someone", "type": "user"} if whoami == 200 else {"error": "no"})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = creates if self.path.startswith("/api/repos/create") else uploads
            url = f"http://127.0.0.1:{self.server.server_address[1]}/{REPO}"
            self.answer(status, {"url": url, "name": REPO} if status == 200 else {"error": "no"})

    return serving(Hub)


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
@pytest.mark.parametrize("whoami, creates, said", [
    (401, 401, "does not accept the token (--hub_token, else HF_TOKEN or the one logged in): HTTP 401"),
    (200, 403, "does not let this token write to nerkit-tests/tiny-tagger (HTTP 403)"),
    (500, 200, "the Hugging Face Hub failed to answer"),
])
def test_a_push_the_hub_refuses_is_refused_before_anything_loads(script, whoami, creates, said, tiny_bert, tmp_path):
    """The hub answers but will not take the push (no login, a bad token, another's organisation): the
    Trainer failed with a traceback when it was built, and the loop after training."""
    train = write_jsonl(tmp_path / "train.json", examples(8))
    output_dir = tmp_path / "out"
    flags = ["--do_train"] if script == "run_ner.py" else []
    with hub_answering(whoami, creates) as endpoint:
        env = unreachable_hub(tmp_path / "cache") | {"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_not_a_token"}
        result = subprocess.run([sys.executable, os.path.join(ROOT, script), "--model_name_or_path", tiny_bert,
                                 "--train_file", train, "--output_dir", str(output_dir), "--push_to_hub",
                                 "--hub_model_id", REPO, *flags], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not output_dir.exists()


@pytest.mark.parametrize("script", ["run_ner.py", "run_ner_no_trainer.py"])
def test_a_push_that_fails_after_training_says_where_the_model_is(script, tiny_bert, tmp_path, monkeypatch):
    import run_ner
    import run_ner_no_trainer
    from nerkit.errors import UserError
    from nerkit import hub

    monkeypatch.setattr(hub, "offline_unless_reachable", lambda names, push=None: None)  # the start went well
    train = write_jsonl(tmp_path / "train.json", examples(8))
    module = run_ner if script == "run_ner.py" else run_ner_no_trainer
    monkeypatch.setattr(module, "check_hub_for_training", lambda *args: None)
    argv = ["--model_name_or_path", tiny_bert, "--train_file", train, "--output_dir", str(tmp_path / "out"),
            "--push_to_hub", "--hub_model_id", REPO, "--num_train_epochs", "1"]
    with hub_answering(200, 200, uploads=500) as endpoint:  # the repository exists; every upload fails
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", endpoint)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        with pytest.raises(UserError, match=f"--push_to_hub: uploading {tmp_path / 'out'} to {REPO} failed") as error:
            module.cli(argv + (["--do_train"] if script == "run_ner.py" else []))
    assert f"upload it later with `hf upload {REPO} {tmp_path / 'out'}`" in str(error.value)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_cached_model_without_weights_is_named_as_cached_in_part(cached_tagger, tmp_path):
    """A download of the tokenizer and config alone: transformers says the repository has no weights file,
    which offline says nothing of the repository itself."""
    import shutil

    partial = tmp_path / "cache"
    shutil.copytree(cached_tagger, partial)
    (partial / f"models--{REPO.replace('/', '--')}" / "snapshots" / REVISION / "model.safetensors").unlink()
    train = write_jsonl(tmp_path / "train.json", examples(8))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_ner.py"), "--model_name_or_path", REPO,
                             "--train_file", train, "--output_dir", str(tmp_path / "out"), "--do_train",
                             "--ignore_mismatched_sizes"], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(partial)))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"Offline, '{REPO}' can only come from the local cache, and what it holds of it is not enough" \
        in result.stderr and f"`hf download {REPO}`" in result.stderr


def test_a_library_warning_is_printed_once():
    code = ("from nerkit.workflow import setup_logging\n"
            "import datasets, huggingface_hub\n"
            "setup_logging('run_ner', True)\n"
            "datasets.utils.logging.get_logger('datasets.load').warning('datasets says so')\n"
            "huggingface_hub.utils.logging.get_logger('huggingface_hub.utils._http').warning('the hub says so')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    printed = result.stdout + result.stderr
    assert printed.count("datasets says so") == 1 and printed.count("the hub says so") == 1, printed


@pytest.mark.parametrize("script, model_flag", [("run_ner.py", "--model_name_or_path"),
                                                ("run_ner_no_trainer.py", "--model_name_or_path"),
                                                ("predict_ner.py", "--model")])
def test_a_model_neither_cached_nor_local_is_one_paragraph_when_the_hub_does_not_answer(script, model_flag, tmp_path):
    train = write_jsonl(tmp_path / "train.json", examples(8))
    flags = {"run_ner.py": ["--train_file", train, "--output_dir", str(tmp_path / "out"), "--do_train"],
             "run_ner_no_trainer.py": ["--train_file", train, "--output_dir", str(tmp_path / "out")],
             "predict_ner.py": ["--input", train, "--output", str(tmp_path / "out.jsonl")]}[script]
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), model_flag, "nerkit-tests/not-cached",
                             *flags], capture_output=True, text=True, cwd=ROOT, env=unreachable_hub(tmp_path / "c"))
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.splitlines()[-1]  # after the warning that the hub does not answer, in predict_ner.py
    assert result.stderr.endswith("\n" + message + "\n") or result.stderr == message + "\n", result.stderr
    assert message.startswith("error: ") and "Traceback" not in result.stderr  # one paragraph, on one line
    assert "nerkit-tests/not-cached" in message and model_flag in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.jsonl").exists()
