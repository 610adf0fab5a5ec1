"""A script's start and end (nerkit.startup): no garbage collections while the libraries load, no process
group left for the interpreter's shutdown."""

import gc
import os
import subprocess
import sys

import pytest

from nerkit.startup import collection_paused

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def collection_restored():
    collecting = gc.isenabled()
    yield
    gc.unfreeze()  # back into the oldest generation, where collections see them as before
    (gc.enable if collecting else gc.disable)()


def test_collection_is_off_inside_and_what_was_made_is_frozen_after(collection_restored):
    gc.enable()
    frozen = gc.get_freeze_count()
    with collection_paused():
        assert not gc.isenabled()
        made = [[index] for index in range(5000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made)


def test_collection_stays_off_where_it_was_off_and_comes_back_after_an_error(collection_restored):
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(ZeroDivisionError):
        with collection_paused():
            1 / 0
    assert gc.isenabled()


PROBE = """
import gc, sys
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2 else None)
import {script}
print(len(full), gc.isenabled(), gc.get_freeze_count())
"""


@pytest.mark.parametrize("script", ["run_ner", "run_ner_no_trainer", "predict_ner"])
def test_importing_a_script_runs_no_full_collection_and_freezes_the_libraries(script):
    """In a fresh process: no full collection while the script's libraries load (the collector's count of
    objects would set off several), collection on after it, and the libraries' objects frozen."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(script=script)], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    full, enabled, frozen = result.stdout.split()
    assert (int(full), enabled) == (0, "True")
    assert int(frozen) > 100_000


def test_a_script_leaves_its_process_group_before_the_interpreter_ends(tmp_path):
    # left to the interpreter's shutdown, a gloo group sometimes aborted a process that had done its work
    import torch.distributed as distributed

    from nerkit.startup import leave_process_group

    leave_process_group()  # no group: nothing to do
    distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert distributed.is_initialized()
    leave_process_group()
    assert not distributed.is_initialized()
