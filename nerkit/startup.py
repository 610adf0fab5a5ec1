"""A script's start and end: no needless garbage collections (none while its libraries load, none over what
is alive at its exit), and at the end no process group left for the interpreter's shutdown.

Importing torch, transformers, datasets and accelerate makes some 760,000 Python objects that live as
long as the process, and next to no garbage; yet CPython's collector walks all of them in each full
collection that their number sets off while they load. `collection_paused` turns collections off around the
imports and then moves what they made into the permanent generation (`gc.freeze`), so later collections
(in training, evaluation) walk only the objects made after it. On the Intel Xeon of bench/RESULTS.md,
`import run_ner` took 2.97-3.06 s against 3.44-3.46 s (three runs each, both freezing at the end as the
scripts do; seven full collections before, none now), and `predict_ner.py` tagging one line 3.19-3.26 s
against 3.88-4.11 s.
"""

import contextlib
import gc


@contextlib.contextmanager
def collection_paused():
    """No garbage collection inside; on leaving, everything alive is frozen and collection is on again if it
    was on before."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def quiet_interrupt_while_importing():
    """Ctrl-C (or SIGTERM, in a process on its own) in a script's first seconds, while its libraries import
    (before `exit_on_user_error` is in place), ends it with 'Interrupted.' and status 130 ('Terminated.',
    143), as later, not with a traceback through the imports or in silence."""
    import os
    import signal
    import sys

    from .errors import Terminated, raise_terminated

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, raise_terminated)
    default = sys.excepthook

    def hook(kind, value, traceback):
        for stopped, said, status in ((KeyboardInterrupt, "Interrupted.", 130), (Terminated, "Terminated.", 143)):
            if issubclass(kind, stopped):
                sys.stderr.write(f"{said}\n")
                sys.stderr.flush()
                os._exit(status)
        default(kind, value, traceback)

    sys.excepthook = hook


def end_of_script():
    """What a script does last, after its work or its error message: leave torch.distributed's process group,
    then skip the interpreter's last garbage collections."""
    leave_process_group()
    skip_collection_at_exit()


# What a process of a group holds until it ends (keep_until_exit)
KEPT_UNTIL_EXIT = []


def keep_until_exit(*objects):
    """In a process of a group (WORLD_SIZE > 1): hold `objects` (the run: its DDP model) until the process
    ends through `end_of_group_run`, never freed. Freeing DDP's reducer joins gloo's worker thread while the
    interpreter holds the GIL, and the worker may be waiting for the GIL to free the tensors of a finished
    all-gather: a deadlock, after all the work was done and written (2 runs in 25 of the Accelerate loop on 2
    CPU processes under torchrun, seen in both threads' native stacks). A process on its own frees them."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        KEPT_UNTIL_EXIT.extend(objects)


def end_of_group_run():
    """After a run that succeeded, in a process of a group: end now, status 0, logs and streams flushed,
    without the interpreter's shutdown, which would free what `keep_until_exit` holds (nerkit.errors
    leaves a group the same way after an error)."""
    import os

    from .errors import leave_group_at_once

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        leave_group_at_once(0)


def leave_process_group():
    """Destroy torch.distributed's default process group, if one was set up. Left to the interpreter's
    shutdown, a gloo group sometimes ends a process that has done all its work with "terminate called without
    an active exception" (SIGABRT), and the launcher reports the run as failed: 1 to 3 in 15 runs of
    run_ner.py on 2 CPU processes under torchrun or accelerate launch here. The Trainer never destroys it;
    the Accelerate loop's end_training does, after a run that succeeded."""
    import sys

    distributed = sys.modules.get("torch.distributed")  # not imported: no group to leave
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def skip_collection_at_exit():
    """Move every object alive into the collector's permanent generation (`gc.freeze`), for the end of a
    script: the interpreter's shutdown then does not walk them all in its last garbage collections. With
    torch and transformers loaded those walks take most of a second (0.85 s of an import-only process on
    the Intel Xeon of bench/RESULTS.md) and change nothing: the process ends, and the operating system takes
    its memory back whole. Exit handlers still run, and streams are still flushed."""
    gc.freeze()
