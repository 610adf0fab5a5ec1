"""Errors a user can fix, reported as one paragraph with exit status 2 and no traceback."""

import contextlib
import errno
import os
import re
import sys
import time
import traceback

OTHER_PROCESS_DELAY = 1  # second; torchrun looks at its processes every 0.1 s


class UserError(Exception):
    """A problem with the command line, the data or the model folder that the user can fix.

    The message names the flag, file or line and says what to do; `exit_on_user_error` prints it.
    """


class Terminated(BaseException):
    """SIGTERM (kill, timeout, a job scheduler) raised where the process is, so that it unwinds as after
    Ctrl-C: what was being written is removed, and the files it was to replace are kept
    (nerkit.outputs.write_together)."""


def exit_on_user_error(function, *args, **kwargs):
    """Call `function`; on a `UserError`, or a disk that is full, print its message to stderr and exit with
    status 2; on Ctrl-C or SIGTERM say so and exit with 130 or 143."""
    try:
        with terminated_as_interrupted():
            return function(*args, **kwargs)
    except UserError as error:
        say_and_exit(str(error), 2)
    except KeyboardInterrupt:  # Ctrl-C: what was being written is kept whole or not at all (write_atomic)
        if int(os.environ.get("RANK", "0")) == 0:  # Ctrl-C reaches every process of a launch: said once
            sys.stderr.write("Interrupted.\n")
        end_process(130)
    except Terminated:
        sys.stderr.write("Terminated.\n")
        sys.exit(143)
    except Exception as error:
        if not no_room(error):
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the traceback, then no shutdown (leave_group_at_once)
                traceback.print_exc()
                leave_group_at_once(1)
            raise
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        say_and_exit(f"A file could not be written, as the disk is full or a limit on file size or quota is reached "
                     f"({said}). What was being written is left out, and the files it was to replace are kept. Free "
                     "space (or write to a disk with room) and run the command again: a training run resumes from "
                     "its last complete checkpoint.", 2)


def say_and_exit(message, status):
    if int(os.environ.get("RANK", "0")) > 0:  # another process of a launch (torchrun, accelerate launch)
        # Process 0 meets the same error at the same check and says it; the launcher stops the other
        # processes as soon as it exits, before they repeat it. An error of this process alone is said.
        time.sleep(OTHER_PROCESS_DELAY)
    # one write, so that the messages of several processes stopping together do not run into each other
    sys.stderr.write(f"error: {one_paragraph(message)}\n")
    end_process(status)


def end_process(status):
    """Exit with `status`: at once in a process of a group (leave_group_at_once), else as usual."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        leave_group_at_once(status)
    sys.exit(status)


# What a full disk says through the libraries that write: OSError's errno, safetensors' Rust error and torch's
# zip writer in words.
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
NO_ROOM_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded", "os error 28", "os error 27",
                 "os error 122", "file write failed", "PytorchStreamWriter", "iostream error")


def no_room(error):
    """Whether `error` (or what it was raised from) says the disk is full or a file size limit is reached."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in NO_ROOM_ERRNOS or any(
                text in str(error) for text in NO_ROOM_TEXTS):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def terminated_as_interrupted():
    """Inside, SIGTERM raises Terminated, in a process on its own whose SIGTERM nothing else handles. Not in
    a process of a launch: torchrun stops the others of a failed group with SIGTERM, which must end one that
    waits in a collective operation at once, where a Python handler would wait for the operation to return."""
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or int(os.environ.get("WORLD_SIZE", "1")) > 1 \
            or previous not in (signal.SIG_DFL, raise_terminated):  # raise_terminated: set while importing
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def raise_terminated(signum, frame):
    raise Terminated()


def leave_group_at_once(status):
    """End a process of a group (torchrun, accelerate launch) with `status` now, its streams flushed, without
    the interpreter's shutdown or torch.distributed's teardown: all that is left to say has been said, and
    the launcher needs only the status. A regular exit there has hung: a process of a two-process run that
    had printed its error did not end for five minutes (twice in the test suite, once in CI; never in some
    70 runs of the same command in a row), and after Ctrl-C one waited for the launcher's SIGKILL (4 runs in
    10): freeing DDP's reducer in the shutdown deadlocks with gloo's worker thread (nerkit.startup)."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or full stream: nothing more can reach it
                pass
    os._exit(status)


def one_paragraph(message):
    """`message` on one line: a library's text quoted in it (the hub's complaint when offline spans lines) is
    joined with spaces, while the spacing within a line, which may quote a word or a tag, is kept."""
    return re.sub(r"\s*\n\s*", " ", message.strip())
