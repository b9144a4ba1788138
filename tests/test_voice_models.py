"""A voiceprint holds an embedding per shipped model (issue 11, point 5): a voice enrolled with
the default works under ``--model campp`` and the reverse, scoring exactly as a voice enrolled
with that model; a voiceprint from before is reported with a one-line re-enrol message."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rtverify.core.encoder import load_model_info, resolve_model, shipped_models
from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

DEMO = __import__("pathlib").Path(__file__).resolve().parent.parent / "rtverify" / "demo"
TAKES = [str(DEMO / "enroll_1.flac"), str(DEMO / "enroll_2.flac")]


def cli(store, *args):
    return subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=180,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def decisions(store, *model):
    r = cli(store, "listen", *model, "--name", "alice", "--input",
            str(DEMO / "conversation.flac"), "--json")
    assert r.returncode == 0, r.stderr
    return [(e["start_s"], e["accepted"], round(e["score"], 5)) for e in
            map(json.loads, r.stdout.splitlines()) if e.get("event") == "decision"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    out = {}
    for model in ("default", "campp"):
        store = tmp_path_factory.mktemp(model)
        r = cli(store, "enroll", "--model", model, "--name", "alice", "--input", *TAKES)
        assert r.returncode == 0, r.stderr
        out[model] = store
    return out


def test_each_voiceprint_holds_every_shipped_model(stores):
    for model, store in stores.items():
        d = json.loads((store / "alice.json").read_text())
        assert d["model_id"].startswith(model + "-")
        held = {mid: v["embedding_dim"] for mid, v in d["models"].items()}
        ids = {n: load_model_info(resolve_model(n)) for n in shipped_models()}
        assert set(ids) == {"default", "default-short", "default-short-fp32", "campp", "fusion"}
        want = {i.model_id: i.embedding_dim for n, i in ids.items() if n != model}
        assert held == want and {ids["campp"].embedding_dim, ids["fusion"].embedding_dim,
                                 ids["default-short"].embedding_dim} == {192, 448, 256}


@pytest.mark.parametrize("model", ["default", "campp"])
def test_a_voice_enrolled_with_one_model_scores_under_the_other_as_if_enrolled_with_it(
        stores, model):
    other = "campp" if model == "default" else "default"
    native = decisions(stores[model], "--model", model)
    borrowed = decisions(stores[other], "--model", model)
    assert any(a for _, a, _ in native)
    assert borrowed == native


def test_a_voiceprint_from_before_is_refused_under_another_model_in_one_line(stores, tmp_path):
    old = json.loads((stores["default"] / "alice.json").read_text())
    del old["models"]
    store = tmp_path / "old"
    store.mkdir(mode=0o700)
    (store / "alice.json").write_text(json.dumps(old))
    (store / "alice.json").chmod(0o600)
    ok = cli(store, "verify", "--name", "alice", "--input", TAKES[1])
    assert ok.returncode == 0, ok.stderr  # still fine under its own model
    r = cli(store, "verify", "--model", "campp", "--name", "alice", "--input", TAKES[1])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "holds no embedding for campp" in r.stderr and "re-enroll" in r.stderr
    assert json.loads((store / "alice.json").read_text()) == old  # untouched


def test_the_other_models_survive_a_round_trip_and_damage_is_named(stores, tmp_path):
    src = VoiceprintStore(stores["default"])
    vp = src.load("alice")
    ids = sorted(vp.models)
    back = Voiceprint.from_dict(json.loads(json.dumps(vp.to_dict())), "x")
    for mid in ids:
        np.testing.assert_allclose(back.models[mid][0], vp.models[mid][0], atol=1e-7)
    seen = back.for_model(ids[0])  # seen by another model, nothing is lost
    assert seen.model_id == ids[0] and vp.model_id in seen.models
    again = Voiceprint.from_dict(seen.to_dict(), "y").for_model(vp.model_id)
    np.testing.assert_allclose(again.embedding, vp.embedding, atol=1e-7)
    d = vp.to_dict()
    d["models"][ids[0]]["embedding"] = d["models"][ids[0]]["embedding"][:-1]
    with pytest.raises(Exception) as exc:
        Voiceprint.from_dict(d, "z.json")
    assert "z.json: damaged voiceprint" in str(exc.value) and "values" in str(exc.value)
