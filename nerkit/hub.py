"""Whether a run may use the Hugging Face Hub, decided once, before anything loads.

A model or dataset named by its hub id is fetched from the hub, or from the local cache when the hub is
out of reach. Without a network, huggingface_hub retries each file's request five times, 2 to 8 s apart,
for each of the tokenizer, the config and the weights: close to a minute of warnings before a model that
sits in the cache loads, or before the run says it cannot find one that does not. One request answered
or not tells the same thing at once; when it goes unanswered the run goes on as with HF_HUB_OFFLINE=1.
"""

import logging
import os
from dataclasses import dataclass

from .errors import UserError

logger = logging.getLogger(__name__)


# Spellings that name a local path, never a hub id: a folder that does not exist is not looked for online.
LOCAL_SPELLINGS = ("/", "./", "../", "~")


def exists_locally(name):
    """Whether `name` is a file or folder here (`~` expanded)."""
    return os.path.exists(os.path.expanduser(name))


def hub_names(*names):
    """The names among `names` that would be looked up on the hub (given, not a local path, and not spelled
    as one), each once."""
    found = [name for name in names if name and not name.startswith(LOCAL_SPELLINGS) and not exists_locally(name)]
    return list(dict.fromkeys(found))


def remote_code_refusal(name, error):
    """The UserError for a model that comes with its own code (config.json's auto_map), which transformers
    refused to run because the command did not allow it; None for any other loading error."""
    if "trust_remote_code" not in str(error):
        return None
    return UserError(f"'{name}' comes with its own model code (its config.json names it in auto_map), which runs "
                     "only when the command allows it: add --trust_remote_code if you trust that code.")


def offline_note(name):
    """What to add to a model's loading failure offline, for a hub id: that only the local cache was read,
    and holds too little of it (a download of its tokenizer and config alone, say); '' otherwise."""
    from huggingface_hub import constants

    if not hub_names(name) or not constants.is_offline_mode():
        return ""
    return (f" Offline, '{name}' can only come from the local cache, and what it holds of it is not enough: download "
            f"the model once with a network (`hf download {name}`), or give a local folder.")


def offline_unless_reachable(names, push=None):
    """Ask the hub once whether it answers, when `names` (see `hub_names`) or `push` (a PushTarget) need it.
    When it does not, a push is a `UserError`, before any weights load, instead of a failure after training;
    otherwise huggingface_hub, transformers and datasets go offline for this process, so that the names are
    read from the local cache only, and the log says so. When it answers, a push is prepared (`prepare_push`)."""
    from huggingface_hub import constants

    pushes = push is not None
    if not names and not pushes:
        return
    if constants.is_offline_mode():
        why = "offline mode is set (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)"
    else:
        failure = unanswered(constants.ENDPOINT, constants.HF_HUB_ETAG_TIMEOUT)
        if failure is None:
            if pushes:
                prepare_push(push)
            return
        why = f"{constants.ENDPOINT} does not answer ({failure})"
        if not pushes:
            logger.warning("The Hugging Face Hub cannot be reached: %s. Reading %s from the local cache only, as "
                           "with HF_HUB_OFFLINE=1.", why, ", ".join(f"'{name}'" for name in names))
        go_offline()
    if pushes:
        raise UserError(f"--push_to_hub needs the Hugging Face Hub, and {why}. Train without --push_to_hub (the "
                        "model is saved in --output_dir) and upload that folder later, e.g. with `hf upload "
                        "<repo id> <output_dir>`.")


def unanswered(endpoint, timeout):
    """None when `endpoint` answers one HEAD request through the hub client's own session (so its proxy
    settings apply); else what went wrong, in a few words. A client error status (a 404 from a mirror) is
    an answer; a server error is not: in an outage huggingface_hub would retry every file for minutes
    before it fell back to the cache."""
    from huggingface_hub.utils import get_session

    try:
        status = get_session().head(endpoint, timeout=timeout).status_code
    except Exception as error:  # the HTTP client's own connection, proxy and timeout errors: no answer
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"HTTP {status}" if status >= 500 else None


def go_offline():
    """Offline mode for this process: huggingface_hub and transformers ask `constants.is_offline_mode()` at
    each request; datasets copied the setting into its config when it was imported."""
    import datasets
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True


@dataclass(frozen=True)
class PushTarget:
    """Where --push_to_hub sends the output folder: the repository (--hub_model_id, else the folder's name,
    as upstream names it), the token (--hub_token, else the one logged in) and whether a new one is private."""

    repo_id: str
    token: str | None = None
    private: bool | None = None

    @classmethod
    def of(cls, args):
        """From the Trainer's or the loop's arguments, or None without --push_to_hub."""
        if not args.push_to_hub:
            return None
        return cls(args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)), args.hub_token,
                   getattr(args, "hub_private_repo", None))


def check_hub_for_training(model_args, data_args, push=None):
    """`offline_unless_reachable` for run_ner.py and run_ner_no_trainer.py: the names they would look up on
    the hub, and the PushTarget of --push_to_hub unless the run only checks its data (--check_data pushes
    nothing)."""
    names = hub_names(model_args.model_name_or_path, model_args.config_name, model_args.tokenizer_name,
                      data_args.dataset_name)
    offline_unless_reachable(names, push=None if data_args.check_data else push)


def prepare_push(push):
    """Before any weights load, what upstream's loop does first: the token is one the hub takes and the
    repository exists (created if not, as the Trainer creates it), so that a missing login or a repository
    the token may not write to stops the run now, not after training."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=push.token)
    later = "or train without --push_to_hub and upload the output folder later (`hf upload <repo id> <output_dir>`)"
    try:
        api.whoami()
        api.create_repo(push.repo_id, private=push.private, exist_ok=True)
    except LocalTokenNotFoundError:
        raise UserError("--push_to_hub needs a Hugging Face token, and none is given or stored: log in with `hf auth "
                        "login` (or set HF_TOKEN), or give --hub_token.") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise UserError("--push_to_hub: the Hugging Face Hub does not accept the token (--hub_token, else HF_TOKEN "
                            "or the one logged in): HTTP 401. Log in again (`hf auth login --force`), give another "
                            f"--hub_token, {later}.") from None
        if status in (403, 404):
            raise UserError(f"--push_to_hub: the Hugging Face Hub does not let this token write to {push.repo_id} "
                            f"(HTTP {status}). Use a token with write access there, name a repository you own with "
                            f"--hub_model_id, {later}.") from None
        raise UserError(f"--push_to_hub: the Hugging Face Hub failed to answer ({str(error).splitlines()[0]}). Try "
                        f"again later, {later}.") from None
    except Exception as error:  # noqa: BLE001 -- the HTTP client's connection and timeout errors
        raise UserError(f"--push_to_hub needs the Hugging Face Hub, which stopped answering ({type(error).__name__}: "
                        f"{error}). Try again later, {later}.") from None


def push_failure(error, push, output_dir):
    """The UserError for a push that fails after training: the model is saved, and can be uploaded later."""
    said = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"--push_to_hub: uploading {output_dir} to {push.repo_id} failed ({said}). Everything is saved "
                     f"in {output_dir}; upload it later with `hf upload {push.repo_id} {output_dir}`.")
