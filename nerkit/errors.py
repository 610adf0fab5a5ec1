"""Errors a user can fix, reported as one paragraph with exit status 2 and no traceback."""

import os
import re
import sys
import time

OTHER_PROCESS_DELAY = 1  # second; torchrun looks at its processes every 0.1 s


class UserError(Exception):
    """A problem with the command line, the data or the model folder that the user can fix.

    The message names the flag, file or line and says what to do; `exit_on_user_error` prints it.
    """


def exit_on_user_error(function, *args, **kwargs):
    """Call `function`; on a `UserError` print its message to stderr and exit with status 2."""
    try:
        return function(*args, **kwargs)
    except UserError as error:
        if int(os.environ.get("RANK", "0")) > 0:  # another process of a launch (torchrun, accelerate launch)
            # Process 0 meets the same error at the same check and says it; the launcher stops the other
            # processes as soon as it exits, before they repeat it. An error of this process alone is said.
            time.sleep(OTHER_PROCESS_DELAY)
        # one write, so that the messages of several processes stopping together do not run into each other
        sys.stderr.write(f"error: {one_paragraph(str(error))}\n")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            leave_group_at_once(2)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: what was being written is kept whole or not at all (write_atomic)
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)


def leave_group_at_once(status):
    """End a process of a group (torchrun, accelerate launch) with `status` now, its streams flushed, without
    the interpreter's shutdown or torch.distributed's teardown: all that is left to say has been said, and
    the launcher needs only the status. A regular exit there has hung: a process of a two-process run that
    had printed its error did not end for five minutes (twice in the test suite, once in CI; never in some
    70 runs of the same command in a row)."""
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
