"""Issue 5's bad-input table (all but the hour-long cases, which are in test_bad_input_hour.py):
each case through ``verify``, ``enroll --input`` and ``listen --input`` as a subprocess; see
``badinput.py`` for what counts as correct."""

import shutil

import numpy as np
import pytest

from badinput import CASES, COMMANDS, alice_speech, build, check, command_args, \
    enroll_reference, rtverify, store_state, verify_reference


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    store = base / "voices"
    alice = enroll_reference(store, base / "enroll")
    speech = alice_speech()
    return base, store, alice, speech, verify_reference(speech, store, base / "reference")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(setup, tmp_path, case, command):
    base, reference, alice, speech, verified = setup
    store = tmp_path / "voices"
    shutil.copytree(reference, store)
    path = build(case.name, tmp_path, speech)
    before = store_state(store)
    run = rtverify(command_args(command, path, case.stdin), store=store, workdir=tmp_path / "run",
                   stdin=path if case.stdin else None)
    check(case, command, run, path, store, before, alice, verified)
