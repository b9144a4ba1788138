"""The hour-long cases of issue 5's bad-input table: an hour of silence and an hour of white
noise through ``verify``, ``enroll --input`` and ``listen --input``. The files are built once,
block by block, as compactly as they come (8 kHz: silence as 16-bit FLAC, 90 kB; noise as 8-bit
WAV, 29 MB), and rtverify must stream them: its peak memory may not exceed that of a run on the
first 10 ms of the same file by more than a third of what the hour takes decoded (115 MB as
float32)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from badinput import Case, check, command_args, enroll_reference, rtverify, store_state

pytestmark = pytest.mark.slow

RATE_HZ = 8000
HOUR_S = 3600
MAX_EXTRA_RSS_MB = 40.0

HOUR_CASES = [Case("hour_of_silence", "nothing"), Case("hour_of_white_noise", "noise")]


def write_hour(path, subtype, block):
    """An hour at 8 kHz, written a minute at a time (never whole in memory here either)."""
    rng = np.random.default_rng(5)
    with sf.SoundFile(path, "w", RATE_HZ, 1, subtype=subtype) as f:
        for _ in range(HOUR_S // 60):
            f.write(block(rng, 60 * RATE_HZ))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("hour")
    store = base / "voices"
    alice = enroll_reference(store, base / "enroll")
    files = {
        "hour_of_silence": write_hour(base / "silence.flac", "PCM_16",
                                      lambda rng, n: np.zeros(n, np.float32)),
        "hour_of_white_noise": write_hour(base / "noise.wav", "PCM_U8",
                                          lambda rng, n: rng.uniform(-0.5, 0.5, n)),
    }
    # the reference for memory: 10 ms of the same format through the same command
    baseline = {}
    for case, path in files.items():
        with sf.SoundFile(path) as f:
            short = base / f"short{path.suffix}"
            sf.write(short, f.read(RATE_HZ // 100), RATE_HZ, subtype=f.subtype)
        for command in ("verify", "enroll", "listen"):
            baseline[case, command] = rtverify(command_args(command, short, False), store=store,
                                               workdir=base / command).maxrss_mb
    return store, alice, files, baseline


@pytest.mark.parametrize("command", ["verify", "enroll", "listen"])
@pytest.mark.parametrize("case", HOUR_CASES, ids=[c.name for c in HOUR_CASES])
def test_an_hour_of_it(setup, tmp_path, case, command):
    reference, alice, files, baseline = setup
    store = tmp_path / "voices"
    shutil.copytree(reference, store)
    path = files[case.name]
    before = store_state(store)
    run = rtverify(command_args(command, path, False), store=store, workdir=tmp_path / "run",
                   timeout_s=180)
    print(f"{command} {case.name}: exit {run.returncode} in {run.wall_s:.1f} s, "
          f"peak RSS {run.maxrss_mb:.0f} MiB (10 ms of it: {baseline[case.name, command]:.0f} MiB)")
    check(case, command, run, path, store, before, alice)
    assert run.maxrss_mb < baseline[case.name, command] + MAX_EXTRA_RSS_MB, \
        (run.maxrss_mb, baseline)
    if command == "listen":  # the whole hour was heard
        summary = json.loads(run.stdout.splitlines()[-1])
        assert abs(summary["stream_s"] - HOUR_S) < 1.0, summary
