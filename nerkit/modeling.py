"""Loading the config and the model, with the label names the run settled on."""

import contextlib
import logging
import os

from .errors import UserError
from .hub import offline_note, remote_code_refusal

logger = logging.getLogger(__name__)


def load_config(model_args, task_name):
    from transformers import AutoConfig

    name = model_args.config_name or model_args.model_name_or_path
    if name is None:  # run_ner_no_trainer.py --model_type: a new model trained from scratch
        try:
            return AutoConfig.for_model(model_args.model_type, finetuning_task=task_name)
        except ValueError:
            raise UserError(f"--model_type {model_args.model_type} is not a model type transformers knows; give "
                            "--model_name_or_path, or --config_name, instead.") from None
    try:
        return AutoConfig.from_pretrained(name, finetuning_task=task_name, **model_args.hub_kwargs())
    except (OSError, ValueError) as error:
        raise remote_code_refusal(name, error) or UserError(
            f"Could not load a model configuration from '{name}': {str(error).rstrip('.')}. Check "
            "--model_name_or_path or --config_name; when offline, give a local folder.") from None


def check_model_folder(name, flag, config_elsewhere=False):
    """A local model folder, before its tokenizer or weights load: it has a config.json (unless the config
    comes from --config_name), and its config, weights and weight index open (nerkit.resume.unreadable: only
    headers are read). transformers would otherwise speak of a missing `model_type` key, of sentencepiece for
    a folder with no tokenizer, or of a safetensors header, without naming the file. A hub id passes."""
    from .resume import LOOP_STATE, unreadable

    if not name or not os.path.isdir(os.path.expanduser(name)):
        return
    name = os.path.expanduser(name)
    files = sorted(os.listdir(name))
    if "config.json" not in files and not config_elsewhere and LOOP_STATE in files:
        run_folder = os.path.dirname(os.path.abspath(name))
        raise UserError(f"{name} ({flag}) is a checkpoint of run_ner_no_trainer.py: accelerate's state of the run "
                        "(weights, optimizer, loop_state.json), without the model's config.json or tokenizer. Give "
                        f"the run's output folder ({run_folder}) for its final model, or pass the checkpoint to "
                        "run_ner_no_trainer.py --resume_from_checkpoint to train on from it.")
    if "config.json" not in files and not config_elsewhere:
        holds = f"it holds {', '.join(files[:6])}{', ...' if len(files) > 6 else ''}" if files else "it is empty"
        raise UserError(f"{name} ({flag}) has no config.json, so it is not a model folder as save_pretrained writes "
                        f"one ({holds}). Give the folder of a saved or downloaded model, or a hub id.")
    for file in files:
        if file == "config.json" or file.endswith((".safetensors", ".bin", ".index.json")):
            reason = unreadable(os.path.join(name, file))
            if reason:
                raise UserError(f"{os.path.join(name, file)} cannot be read ({reason}): the model folder ({flag}) is "
                                "damaged or was copied only in part. Save or download the model again.")


def set_labels(config, label_list, scheme):
    """Put the real label names in the config, so the saved config.json and any pipeline name them, and the
    tagging scheme (`tagging_scheme`, see nerkit.schemes), so that later runs decode with it."""
    config.id2label = dict(enumerate(label_list))
    config.label2id = {label: i for i, label in enumerate(label_list)}
    config.tagging_scheme = scheme


def broken_weights():
    """What loading a model raises for files a user can replace: missing or unreadable ones (OSError), ones that
    are not what they claim (ValueError), and a truncated or corrupt safetensors file."""
    from safetensors import SafetensorError

    return (OSError, ValueError, SafetensorError)


def load_model(model_args, config, head_reused, training=True):
    """The token-classification model; a head trained for other labels is replaced by a new one. `training`:
    whether the run trains it (the log says whether new weights stay random)."""
    from transformers import AutoModelForTokenClassification

    if model_args.model_name_or_path is None:
        logger.info("Training a new %s model from scratch.", config.model_type)
        return AutoModelForTokenClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)
    try:
        with without_load_report():
            model, loading = AutoModelForTokenClassification.from_pretrained(
                model_args.model_name_or_path,
                config=config,
                ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
                output_loading_info=True,
                **model_args.hub_kwargs(),
            )
    except RuntimeError as error:
        if "mismatched_sizes" not in str(error) and "size mismatch" not in str(error):
            raise
        raise UserError(f"The classification head of {model_args.model_name_or_path} has a different number of "
                        f"labels than the data ({config.num_labels}). Add --ignore_mismatched_sizes to train a "
                        "new head for the data's labels.") from None
    except broken_weights() as error:
        name = model_args.model_name_or_path
        raise remote_code_refusal(name, error) or UserError(
            f"Could not load the model '{name}': {str(error).rstrip('.')}.{offline_note(name)}") from None
    log_loading(model_args.model_name_or_path, loading, training)
    if not head_reused and model_args.ignore_mismatched_sizes:
        reset_head(model)
    return model


@contextlib.contextmanager
def without_load_report():
    """transformers' load report left out of the log for a while (`log_loading` says the same plainly).
    A filter, not a logger level: transformers 5.23 runs other checks when that logger's level is raised."""
    library_logger = logging.getLogger("transformers.modeling_utils")

    def not_the_report(record):
        return "LOAD REPORT" not in record.getMessage()

    library_logger.addFilter(not_the_report)
    try:
        yield
    finally:
        library_logger.removeFilter(not_the_report)


def log_loading(name, loading, training=True):
    """What loading the checkpoint did, in plain lines: transformers' own report is a table with terminal
    colour codes, which logs should not hold."""
    new = sorted(loading["missing_keys"]) + sorted(key for key, *_ in loading["mismatched_keys"])
    if new and training:
        logger.info("New weights, initialised at random and trained here: %s.", listed(new))
    elif new:
        logger.warning("New weights, initialised at random and not trained by this run: %s. The scores are "
                       "those of an untrained head.", listed(new))
    if loading["unexpected_keys"]:
        logger.info("Weights of %s that the token classifier does not use: %s.", name,
                    listed(sorted(loading["unexpected_keys"])))


def listed(names, shown=4):
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def reset_head(model):
    """Re-initialise every layer outside the base model: a same-sized head trained for other labels would
    otherwise keep its old meanings under the new names. Linear layers get the model's own initialisation
    (normal with `initializer_range`, zero bias)."""
    import torch

    base = getattr(model, model.base_model_prefix, None)
    base_modules = set(base.modules()) if base is not None else set()
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for module in model.modules():
            if module is model or module in base_modules or list(module.children()):
                continue
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(mean=0.0, std=std)
                if module.bias is not None:
                    module.bias.zero_()
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()


HEADS = ("classifier.weight", "score.weight")  # what transformers' token-classification heads are named


def saved_head_size(name_or_path, cache_dir=None, revision=None):
    """The rows of the classification head a model's checkpoint holds, in a folder or, for a hub id, in the
    local cache; None: no such file (a hub model not downloaded yet), no head in it (a base or masked-LM
    model, whose head is new), or a file that loading will report. Nothing is loaded: a safetensors file
    (model.safetensors, or the shard its index names for the head) is read from its header, a legacy
    pytorch_model.bin onto the meta device (mapped, not read)."""
    try:
        name_or_path = model_folder(name_or_path, cache_dir, revision)
        if name_or_path is None:
            return None
        for weights, index, read_rows in (("model.safetensors", "model.safetensors.index.json", safetensors_rows),
                                          ("pytorch_model.bin", "pytorch_model.bin.index.json", pickled_rows)):
            path = head_file(name_or_path, weights, index)
            if path is not None:
                return read_rows(path)
    except Exception:  # noqa: BLE001 -- a broken file is for from_pretrained to report, with its own words
        return None
    return None


def model_folder(name_or_path, cache_dir=None, revision=None):
    """A model's folder on disk: the path itself, or the snapshot of a hub id in the local cache (where its
    config.json is), or None."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name_or_path, "config.json", cache_dir=cache_dir, revision=revision)
    return os.path.dirname(found) if isinstance(found, str) else None


def head_file(folder, weights, index):
    """The file of `folder` that holds the head: `weights`, or the one shard `index` names for it; None if
    neither is there."""
    import json

    path = os.path.join(folder, weights)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(folder, index)):
        with open(os.path.join(folder, index), encoding="utf-8") as handle:
            shards = {shard for key, shard in json.load(handle)["weight_map"].items() if key.endswith(HEADS)}
        path = os.path.join(folder, shards.pop()) if len(shards) == 1 else path
    return path if os.path.isfile(path) else None


def safetensors_shapes(path):
    """{tensor name: shape} of a safetensors file, from its header: no weight is read."""
    from .resume import safetensors_header

    return {key: list(entry["shape"]) for key, entry in safetensors_header(path).items()}


def safetensors_rows(path):
    heads = [shape for key, shape in safetensors_shapes(path).items() if key.endswith(HEADS)]
    return heads[0][0] if len(heads) == 1 else None


def pickled_rows(path):
    import torch

    state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    heads = [key for key in state if key.endswith(HEADS)]
    return state[heads[0]].shape[0] if len(heads) == 1 else None


def check_unnamed_head(model_args, label_list, training=True):
    """Refuse, before any weights load, a saved head whose labels have no names (LABEL_0, ...) and whose size
    is not the data's: its weights cannot be loaded into a head for these labels."""
    model_name = model_args.model_name_or_path
    size = None if model_args.ignore_mismatched_sizes else saved_head_size(model_name, model_args.cache_dir,
                                                                           model_args.model_revision)
    if size is None or size == len(label_list):
        return
    fix = ("Add --ignore_mismatched_sizes to train a new head for the data's labels." if training else
           "It cannot score these data; fine-tune it on them first (--do_train --ignore_mismatched_sizes).")
    raise UserError(f"The classification head of {model_name} has {size} labels without names (LABEL_0, ...), "
                    f"and the data has {len(label_list)}. {fix}")


# What a checkpoint's weights must agree with to be resumed into a model: its kind and its shapes
ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size")


def check_checkpoint_model(checkpoint, config, model_name):
    """Refuse, before any weights load, to resume from a checkpoint of another model than --model_name_or_path
    names (a rerun into the same output folder with another model): its weights would not fit, and loading
    them fails with a state-dict traceback or worse. Read from the checkpoint's config.json; a checkpoint
    without one (the Accelerate loop's) is checked by `check_checkpoint_weights`."""
    from .labels import saved_config

    saved = saved_config(checkpoint) if checkpoint else None
    if saved is None:
        return
    current = config.to_dict()
    differing = [f"{key} {saved[key]} against {current[key]}" for key in ARCHITECTURE_KEYS
                 if key in saved and key in current and saved[key] != current[key]]
    if differing:
        raise_other_model(checkpoint, model_name, differing)


def check_checkpoint_weights(checkpoint, model, model_name):
    """The same refusal for a checkpoint that holds model.safetensors without a config.json, from the file's
    header (no weight is read): tensors of another shape, or none under the model's base name (`bert.` in a
    checkpoint of a RoBERTa)."""
    path = os.path.join(checkpoint, "model.safetensors")
    if not os.path.isfile(path):
        return
    own = {key: list(value.shape) for key, value in model.state_dict().items()}
    saved = safetensors_shapes(path)
    differing = [f"{key} {saved[key]} against {own[key]}" for key in saved if key in own and saved[key] != own[key]]
    base = f"{model.base_model_prefix}."
    if not differing and base != "." and not any(key.startswith(base) for key in saved):
        differing = [f"no weight named {base}*"]
    if differing:
        raise_other_model(checkpoint, model_name, differing)


def raise_other_model(checkpoint, model_name, differing):
    raise UserError(f"The checkpoint {checkpoint} was trained from another model than --model_name_or_path "
                    f"{model_name} ({listed(differing, 3)}), so it cannot be resumed. Resume with the model it was "
                    "trained from, or train afresh: leave out --resume_from_checkpoint, with --overwrite_output_dir "
                    "where --output_dir holds the earlier run.")


# What a model the dummy batch does not fit raises (or one sharded before the Trainer prepares it)
DUMMY_BATCH_FAILURES = (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError)


@contextlib.contextmanager
def dummy_batch(model):
    """The model's dummy batch with labels (the first token ignored, as a [CLS] is), for a probe of how the
    model computes: in eval mode, so that no dropout draws from the run's random numbers."""
    import torch

    inputs = {name: value.to(model.device) for name, value in model.dummy_inputs.items()}
    labels = torch.zeros_like(inputs["input_ids"])
    labels[:, 0] = -100
    was_training = model.training
    model.eval()
    try:
        yield dict(inputs, labels=labels)
    finally:
        model.train(was_training)


def declare_mean_loss(model):
    """Tell the Trainer whether the model's loss is a plain mean. Transformers 5 takes a model whose forward
    accepts **kwargs for one that divides its loss by `num_items_in_batch` (the labelled tokens of the whole
    accumulated batch of every process), and then no longer divides the loss by --gradient_accumulation_steps
    and multiplies it by the number of processes. The token classification heads of BERT, RoBERTa, DeBERTa
    and XLM-R take a plain mean, so they would train on, and log, a loss that many times too large. One
    forward on the model's dummy batch with two values of `num_items_in_batch` tells; a model whose loss does
    not move is declared a mean (`accepts_loss_kwargs = False`). Returns whether it was."""
    import inspect

    import torch

    forward = inspect.signature(model.forward).parameters.values()
    if getattr(model, "accepts_loss_kwargs", None) is False or \
            not any(parameter.kind == parameter.VAR_KEYWORD for parameter in forward):
        return False
    try:
        with torch.no_grad(), dummy_batch(model) as batch:
            losses = [model(**batch, num_items_in_batch=torch.tensor(count, device=model.device)).loss
                      for count in (1, 2)]
    except DUMMY_BATCH_FAILURES as error:
        # a model the dummy batch does not fit (or sharded before the Trainer prepares it): the Trainer decides
        logger.info("Could not tell whether the model's loss is a plain mean (%s); the Trainer's guess stands.", error)
        return False
    mean = bool(torch.isclose(losses[0], losses[1]))
    if mean:
        model.accepts_loss_kwargs = False
    return mean


def parameters_without_gradient(model):
    """Names of the trainable parameters that a forward and backward of the model's dummy batch leave without
    a gradient, or None where the batch does not fit the model. Gradients the model held are kept."""
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    held = [parameter.grad for _, parameter in trainable]
    try:
        for _, parameter in trainable:
            parameter.grad = None
        with dummy_batch(model) as batch:
            model(**batch).loss.backward()
        return [name for name, parameter in trainable if parameter.grad is None]
    except DUMMY_BATCH_FAILURES:
        return None
    finally:
        for (_, parameter), grad in zip(trainable, held):
            parameter.grad = grad


def needs_unused_parameter_search(model):
    """Whether DDP must look for unused parameters after every forward: a trainable parameter gets no
    gradient from a forward and backward of the model's dummy batch (Longformer's global-attention projections,
    without a global attention mask), named in the log. Without the search DDP stops such a model at its second
    step with a traceback; with it, it pays a pass over the autograd graph every step. None where the dummy
    batch does not fit the model."""
    unused = parameters_without_gradient(model)
    if unused:
        logger.info("DDP looks for unused parameters at every step: %s get no gradient.", listed(unused, 3))
    return None if unused is None else bool(unused)
