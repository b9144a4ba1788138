"""Thread settings: what the runtime chooses on its own, and the one knob it reads."""

import pytest

from rtverify.core.encoder import THREADS_ENV, EncoderSession, default_threads
from rtverify.errors import ModelError


def test_one_onnxruntime_thread_unless_told(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert default_threads() == 2
    assert EncoderSession().threads == 2
    assert EncoderSession(threads=1).threads == 1  # an explicit argument wins


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5", "65"])
def test_bad_thread_setting_is_one_line_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(ModelError, match=f"{THREADS_ENV}={bad!r}") as err:
        EncoderSession()
    assert "\n" not in str(err.value)


def test_importing_the_runtime_sets_no_thread_variables_and_never_loads_torch():
    import os
    import subprocess
    import sys

    code = ("import os, pkgutil, importlib, rtverify\n"
            "before = dict(os.environ)\n"
            "for m in pkgutil.walk_packages(rtverify.__path__, 'rtverify.'):\n"
            "    if m.name not in ('rtverify.__main__',):\n"
            "        importlib.import_module(m.name)\n"
            "changed = sorted(k for k in set(os.environ) | set(before) "
            "if os.environ.get(k) != before.get(k))\n"
            "import sys, json\n"
            "heavy = sorted(m for m in ('torch', 'librosa', 'resemblyzer', 'onnx') if m in sys.modules)\n"
            "print(json.dumps([changed, heavy]))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)}
    from conftest import REPO

    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    changed, heavy = json.loads(out.stdout)
    assert changed == [] and heavy == []
