"""Mixed precision: decided once from what the command names and the hardware, really in force in the
Trainer, the Accelerate loop and predict_ner, and each run in one process gets its own."""

import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import predict_ner
import run_ner
import run_ner_no_trainer
from nerkit import speed
from nerkit.arguments import launcher_defaults
from nerkit.errors import UserError
from test_predict_ner import TEXTS, trained_model  # noqa: F401 (a fixture)
from test_run_ner import run

LOOP = ["--learning_rate", "5e-3", "--seed", "7", "--per_device_train_batch_size", "8", "--num_train_epochs", "1"]


class Observed:
    """What a run really did: its accelerator and the dtype of a linear layer's outputs in each mode."""

    def __init__(self):
        self.accelerator = self.trainer = None
        self.dtypes = {"training": set(), "inference": set()}

    def watch(self, model):
        linear = next(module for module in model.modules() if isinstance(module, torch.nn.Linear))
        linear.register_forward_hook(lambda module, inputs, output: self.dtypes[
            "training" if module.training else "inference"].add(output.dtype))
        return model


@pytest.fixture
def observe(monkeypatch):
    """Patch a script module so that its accelerator and its model's activations are recorded."""

    def patch(module):
        observed = Observed()
        if module is run_ner:
            def build_trainer(*args, **kwargs):
                trainer = original_build(*args, **kwargs)
                observed.accelerator, observed.trainer = trainer.accelerator, trainer
                return trainer
            original_build = module.build_trainer
            monkeypatch.setattr(module, "build_trainer", build_trainer)
        elif module is run_ner_no_trainer:
            def make_accelerator(*args, **kwargs):
                accelerator, precision = original_make(*args, **kwargs)
                observed.accelerator = accelerator
                return accelerator, precision
            original_make = module.make_accelerator
            monkeypatch.setattr(module, "make_accelerator", make_accelerator)
        original_load = module.load_model
        monkeypatch.setattr(module, "load_model", lambda *args: observed.watch(original_load(*args)))
        return observed

    return patch


def run_loop(model, output_dir, files, *flags):
    argv = ["--model_name_or_path", model, "--output_dir", str(output_dir), *LOOP, *flags]
    for split, path in files.items():
        argv += [f"--{split}_file", path]
    run_ner_no_trainer.cli(argv)


# ---- the decision ----

@pytest.fixture
def cpu_only(monkeypatch):
    """The automatic choice as on a machine without GPU and with no precision from a launcher."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv(speed.AUTO_PRECISION_VARIABLE, raising=False)
    monkeypatch.setattr(speed, "accelerator_type", lambda: None)

    def with_capabilities(**flags):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    return with_capabilities


@pytest.mark.parametrize("flags, expected", [
    ({"amx_bf16": True, "amx_tile": True, "avx512_bf16": True}, "bf16"),
    ({"avx512_bf16": True}, "bf16"),
    ({"avx2": True, "avx512_f": True}, "no"),
])
def test_cpu_choice_comes_from_its_instruction_sets_without_timing(cpu_only, monkeypatch, flags, expected):
    cpu_only(**flags)
    monkeypatch.setattr(speed, "bf16_pays_on_cpu", lambda *a, **k: pytest.fail("a run must not time the CPU"))
    precision = speed.decide_precision(None, automatic=True)
    assert (precision.mixed_precision, precision.automatic) == (expected, True)


def test_what_the_command_names_wins(cpu_only, monkeypatch):
    cpu_only(avx2=True)  # the automatic choice would be fp32
    assert speed.decide_precision("bf16", automatic=True).mixed_precision == "bf16"
    cpu_only(amx_bf16=True)
    assert speed.decide_precision(None, automatic=False).mixed_precision == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # accelerate launch --mixed_precision no
    precision = speed.decide_precision(None, automatic=True)
    assert (precision.mixed_precision, precision.automatic) == ("no", False)


def test_fp16_named_for_the_cpu_is_decided_as_the_fp32_it_runs_in(cpu_only, monkeypatch):
    """accelerate runs fp16 autocast on GPUs only: on the CPU it keeps the name and computes in fp32."""
    cpu_only(amx_bf16=True)
    named = speed.decide_precision("fp16", automatic=True)
    assert (named.mixed_precision, named.asked) == ("no", "fp16") and "GPUs only" in named.reason
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch --cpu --mixed_precision fp16
    assert speed.decide_precision(None, automatic=True).mixed_precision == "no"
    monkeypatch.setattr(speed, "accelerator_type", lambda: "cuda")
    assert speed.decide_precision("fp16", automatic=True).mixed_precision == "fp16"
    assert speed.decide_precision("fp16", automatic=True, use_cpu=True).mixed_precision == "no"


def test_a_run_sent_to_the_cpu_on_a_gpu_machine_decides_for_the_cpu(cpu_only, monkeypatch):
    """`accelerate launch --cpu` (ACCELERATE_USE_CPU) and --use_cpu put the run on the CPU of a machine with a
    GPU: the automatic choice is then the CPU's, not the GPU's, and --int8 (a CPU kernel) is not refused."""
    cpu_only(avx2=True)  # a CPU without bf16 instructions
    monkeypatch.setattr(speed, "accelerator_type", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert speed.decide_precision(None, automatic=True).reason == "this GPU supports bf16"
    with pytest.raises(UserError, match="--int8 tags on the CPU"):
        speed.check_int8_possible()
    on_cpu = speed.decide_precision(None, automatic=True, use_cpu=True)
    assert on_cpu.mixed_precision == "no" and "this CPU has no bf16" in on_cpu.reason
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    launched = speed.decide_precision(None, automatic=True)
    assert launched.mixed_precision == "no" and "this CPU has no bf16" in launched.reason
    speed.check_int8_possible()
    # TrainingArguments would keep its own device at cuda:0 while accelerate's state is on the CPU
    assert launcher_defaults() == {"use_cpu": True}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launcher_defaults() == {"ddp_backend": "gloo", "use_cpu": True}


def test_more_processes_than_gpus_are_refused_before_anything_loads(monkeypatch):
    """NCCL drives one GPU a process; two on one GPU stopped at the first collective with a traceback."""
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(speed, "accelerator_type", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"2 processes were started on this machine, which has 1 GPU: .*"
                                        r"torchrun --nproc_per_node 1"):
        speed.check_processes_fit_gpus()
    speed.check_processes_fit_gpus(use_cpu=True)  # run_ner.py --use_cpu: gloo on the CPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    speed.check_processes_fit_gpus()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    speed.check_processes_fit_gpus()


def test_the_loops_cpu_processes_beside_too_few_gpus_are_refused(monkeypatch):
    """accelerate's barrier names cuda:<local rank> also for processes on the CPU: refused, with the way out."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES= accelerate launch --cpu"):
        run_ner_no_trainer.check_cpu_processes_beside_gpus()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a machine without GPUs: the README's case
    run_ner_no_trainer.check_cpu_processes_beside_gpus()


def test_automatic_choice_can_be_forced(cpu_only, monkeypatch):
    cpu_only()
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    assert speed.decide_precision(None, automatic=True).mixed_precision == "bf16"
    assert speed.decide_precision(None, automatic=False).mixed_precision == "no"  # only the automatic choice
    cpu_only(amx_bf16=True)
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "fp32")
    assert speed.decide_precision(None, automatic=True).mixed_precision == "no"
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "fp8")
    with pytest.raises(UserError, match="NERKIT_AUTO_PRECISION=fp8"):
        speed.decide_precision(None, automatic=True)


# ---- the precision in force ----

def test_trainer_really_trains_in_the_automatic_bf16(tiny_bert, ner_files, tmp_path, monkeypatch, observe, caplog):
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    observed = observe(run_ner)
    with caplog.at_level(logging.INFO, logger="nerkit"):
        run(tiny_bert, tmp_path / "o", "--do_train", "--num_train_epochs", "1", files={"train": ner_files["train"]})
    assert observed.accelerator.mixed_precision == "bf16"
    assert observed.dtypes["training"] == {torch.bfloat16}  # autocast was on for every training step
    assert "Training in bf16" in caplog.text


def test_trainer_pads_for_the_bf16_accelerate_launch_names(tiny_bert, ner_files, tmp_path, monkeypatch, observe,
                                                            caplog):
    """accelerate launch's precision reaches TrainingArguments through the environment, not --bf16: the
    padding-free rows and the padded batches are cut for the bf16 kernels all the same."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    observed = observe(run_ner)
    with caplog.at_level(logging.INFO, logger="nerkit"):
        run(tiny_bert, tmp_path / "o", "--do_train", "--num_train_epochs", "1", files={"train": ner_files["train"]})
    assert observed.accelerator.mixed_precision == "bf16" and observed.dtypes["training"] == {torch.bfloat16}
    assert "In bf16 each row ends at a multiple of 32 sub-tokens" in caplog.text
    assert observed.trainer.train_collator.row_multiple == 32
    batch = observed.trainer.data_collator([{"input_ids": [1, 2, 3], "labels": [0, 0, 0]}])  # evaluation's batches
    assert batch["input_ids"].shape == (1, 8)


def test_accelerate_loop_really_trains_in_the_automatic_bf16(tiny_bert, ner_files, tmp_path, monkeypatch, observe):
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    observed = observe(run_ner_no_trainer)
    run_loop(tiny_bert, tmp_path / "o", {"train": ner_files["train"]})
    assert observed.accelerator.mixed_precision == "bf16"
    assert observed.dtypes["training"] == {torch.bfloat16}


def test_runs_in_one_process_each_get_their_precision(tiny_bert, ner_files, tmp_path, monkeypatch, observe):
    """What a notebook or a test suite does: runs one after another, each choosing its precision."""
    files = {"train": ner_files["train"]}
    for number, (script, forced) in enumerate([(run_ner, "bf16"), (run_ner_no_trainer, "fp32"),
                                               (run_ner_no_trainer, "bf16"), (run_ner, "fp32")]):
        monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, forced)
        observed = observe(script)
        if script is run_ner:
            run(tiny_bert, tmp_path / str(number), "--do_train", "--num_train_epochs", "1", files=files)
        else:
            run_loop(tiny_bert, tmp_path / str(number), files)
        expected = {"bf16": ("bf16", torch.bfloat16), "fp32": ("no", torch.float32)}[forced]
        assert (observed.accelerator.mixed_precision, *observed.dtypes["training"]) == expected, number


@pytest.mark.parametrize("named", ["--fp16", "accelerate launch --cpu --mixed_precision fp16"])
def test_fp16_on_the_cpu_trains_in_fp32_and_says_so(tiny_bert, ner_files, tmp_path, observe, caplog, monkeypatch,
                                                    named):
    observed = observe(run_ner)
    flags = ["--fp16"] if named == "--fp16" else []
    if not flags:  # what accelerate launch passes; TrainingArguments reads it when it is created
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with caplog.at_level(logging.INFO, logger="nerkit"):
        run(tiny_bert, tmp_path / "o", "--do_train", "--num_train_epochs", "1", *flags,
            files={"train": ner_files["train"]})
    assert observed.accelerator.mixed_precision == "no" and observed.dtypes["training"] == {torch.float32}
    reason = "--fp16" if flags else "accelerate launch's configuration"
    assert f"Training in fp32 ({reason} asks for fp16, which accelerate runs on GPUs only" in caplog.text
    assert "In fp16 each row" not in caplog.text  # no rows padded for fp16 kernels that do not run
    assert "- mixed_precision: no" in (tmp_path / "o" / "README.md").read_text()


def test_fp16_full_eval_takes_the_place_of_the_automatic_bf16(tiny_bert, ner_files, tmp_path, monkeypatch,
                                                              observe, caplog):
    """--fp16_full_eval casts the model to fp16 for evaluation, which bf16 autocast cannot run on the CPU:
    the run trains in fp32, as upstream's, and evaluates the fp16 model."""
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    observed = observe(run_ner)
    with caplog.at_level(logging.INFO, logger="nerkit"):
        run(tiny_bert, tmp_path / "o", "--do_train", "--do_eval", "--num_train_epochs", "1", "--fp16_full_eval",
            files={"train": ner_files["train"], "validation": ner_files["validation"]})
    assert observed.accelerator.mixed_precision == "no" and observed.dtypes["training"] == {torch.float32}
    assert torch.float16 in observed.dtypes["inference"] and torch.bfloat16 not in observed.dtypes["inference"]
    assert "Training in fp32 (the automatic bf16 gives way to --fp16_full_eval)" in caplog.text
    assert (tmp_path / "o" / "eval_results.json").exists()


@pytest.mark.parametrize("forced, expected", [("bf16", ("bf16", torch.bfloat16)), ("fp32", ("no", torch.float32))])
def test_predict_ner_tags_in_the_automatic_precision(trained_model, monkeypatch, forced, expected):
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, forced)
    tagger = predict_ner.Tagger(trained_model, None, 64, 8, "viterbi")
    observed = Observed()
    observed.watch(tagger.model)
    tags, _ = tagger.tag([text.split() for text in TEXTS])
    assert [len(words) for words in tags] == [len(text.split()) for text in TEXTS]
    assert (tagger.accelerator.mixed_precision, *observed.dtypes["inference"]) == expected


def test_run_ner_predicts_in_the_precision_it_logs(trained_model, ner_files, tmp_path, monkeypatch, observe, caplog):
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    observed = observe(run_ner)
    with caplog.at_level(logging.INFO, logger="nerkit"):
        run(trained_model, tmp_path / "p", "--do_predict", files={"test": ner_files["test"]})
    assert observed.accelerator.mixed_precision == "bf16" and observed.dtypes["inference"] == {torch.bfloat16}
    assert "Inference in bf16" in caplog.text


class WeightCasts(TorchDispatchMode):
    """Counts a model's forward passes and the casts of its classifier's weight to another dtype."""

    def __init__(self):
        super().__init__()
        self.pointer, self.casts, self.forwards = None, 0, 0

    def watch(self, model):
        self.pointer = model.classifier.weight.data_ptr()
        model.register_forward_hook(lambda *args: setattr(self, "forwards", self.forwards + 1))
        return model

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() == self.pointer:
            self.casts += 1
        return func(*args, **(kwargs or {}))


def test_evaluation_and_prediction_cast_each_weight_once(trained_model, ner_files, tmp_path, monkeypatch,
                                                         on_the_cpu):
    """Autocast casts the fp32 weights once per split (nerkit.speed.one_cast_per_weight), not once a batch."""
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")
    counter, original_load = WeightCasts(), run_ner.load_model
    monkeypatch.setattr(run_ner, "load_model", lambda *args: counter.watch(original_load(*args)))
    with counter:
        run(trained_model, tmp_path / "p", "--do_eval", "--do_predict", "--per_device_eval_batch_size", "2",
            files={"validation": ner_files["validation"], "test": ner_files["test"]})
    # the bf16 check's one pass on the longest input (nerkit.speed.check_bf16_runs), then 3 batches per split
    assert (counter.forwards, counter.casts) == (1 + 3 + 3, 1 + 1 + 1)

    tagger = predict_ner.Tagger(trained_model, None, 64, 2, "viterbi")
    counter = WeightCasts()
    counter.watch(tagger.model)
    with counter:
        tagger.tag([text.split() for text in TEXTS])
    assert counter.forwards > 1 and counter.casts == 1


# ---- a model that fails in bf16 ----

@pytest.fixture
def fails_in_bf16(monkeypatch, on_the_cpu):  # the fallback is the CPU's rule
    """BERT's attention raising as BigBird's block-sparse attention does under bf16 autocast on the CPU."""
    from transformers.models.bert import modeling_bert

    original = modeling_bert.BertSelfAttention.forward

    def forward(self, *args, **kwargs):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(modeling_bert.BertSelfAttention, "forward", forward)
    monkeypatch.setenv(speed.AUTO_PRECISION_VARIABLE, "bf16")


def test_a_model_that_fails_in_the_automatic_bf16_trains_in_fp32(tiny_bert, ner_files, tmp_path, fails_in_bf16,
                                                                  observe, caplog):
    for number, script in enumerate((run_ner, run_ner_no_trainer)):
        observed = observe(script)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            if script is run_ner:
                run(tiny_bert, tmp_path / str(number), "--do_train", "--num_train_epochs", "1",
                    files={"train": ner_files["train"]})
            else:
                run_loop(tiny_bert, tmp_path / str(number), {"train": ner_files["train"]})
        assert observed.accelerator.mixed_precision == "no" and observed.dtypes["training"] == {torch.float32}
        assert "The model fails under bf16 autocast on a" in caplog.text
        assert "Training in fp32 (the model fails in bf16 on this CPU (scatter(): Expected" in caplog.text


def test_a_tagger_that_fails_in_the_automatic_bf16_tags_in_fp32(trained_model, fails_in_bf16):
    tagger = predict_ner.Tagger(trained_model, None, 64, 8, "viterbi")
    assert tagger.accelerator.mixed_precision == "no"
    tags, _ = tagger.tag([text.split() for text in TEXTS])
    assert [len(words) for words in tags] == [len(text.split()) for text in TEXTS]


def test_only_an_automatic_bf16_falls_back(tiny_bert, fails_in_bf16):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3).train()
    named = speed.Precision("bf16", "--bf16", automatic=False)
    assert speed.check_bf16_runs(named, model, [2, 7, 3], "cpu") is named  # fails later, as upstream's would
    automatic = speed.Precision("bf16", "this CPU has bf16 matrix instructions", automatic=True)
    assert speed.check_bf16_runs(automatic, model, [2, 7, 3], "cuda") is automatic  # probed on the CPU only
    assert speed.check_bf16_runs(automatic, model, None, "cpu") is automatic  # nothing to run it on
    state = torch.get_rng_state()
    assert speed.check_bf16_runs(automatic, model, [2, 7, 3], "cpu").mixed_precision == "no"
    assert torch.equal(torch.get_rng_state(), state) and model.training  # the run's random numbers are kept
