"""A cohort for a model's score normalisation (``probe_shift``, see
:class:`rtverify.core.scoring.Scorer`), shipped beside the model and named in its sidecar.

    python -m export.cohort --root ../shared/data --model default --audio runs/cohort --write-sidecar
    python -m export.cohort --root ../shared/data --model default --expert --write-sidecar

(``--expert``: the cohort of the model's short expert, embedded by the expert, for the expert's
scores when it decides for this model: ``short_expert.score_norm``.)

The cohort is training material only (never a reported list's speakers): 2 s pieces of the
LibriSpeech speakers outside the dev lists (up to four per speaker) heard as the dev lists hear
theirs (clean, 4-talker babble at 5 dB of Arabic train12 talkers, synthetic reverberation,
telephone band, a simulated shoebox room), the first second of each clean piece, and every
eighth keyword of the Arabic train12 speakers. Its audio is written once under ``--audio``
(a second run only reads it) and embedded through the runtime path (what ``eval`` does); the
embeddings, with each row's speaker, go to ``rtverify/models/<model>-cohort.npz``.

The scores then shift by ``weight * (max(mu, lowest) - centre)``, ``mu`` the mean of the
utterance's ``top_k`` cohort cosines; ``centre`` is the median ``mu`` of the cohort's own rows,
each against the cohort less its own speaker, so thresholds keep their scale, and ``lowest``
their 5th percentile. The thresholds must be
calibrated again afterwards (``export.calibrate``, ``export.calibrate_like``): those scores
leave each probe's own speaker out of the cohort (:meth:`Scorer.probe_scores`), as every
voice heard at run time is out of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.cli import user_errors

LOWEST_QUANTILE = 0.05
"""``mu`` counts no lower than this quantile of the cohort's own (the ``lowest`` of the block)."""
CONDITIONS = ("clean", "babble5", "reverb", "tel8k", "shoebox", "clean1s")
PIECE_S = 2.0


def build_audio(root: Path, out: Path, per: int = 4, seed: int = 101) -> list[Path]:
    """The cohort's audio as FLAC files ``out/<condition>/<speaker>_<i>.flac`` and
    ``out/arabic/<speaker>_<keyword>.flac`` (kept: a second call only lists them)."""
    import soundfile as sf

    from training import degrade
    from training.data import arabic_splits, speech_audio
    from training.dev_lists import LIBRI, _read, babble_talkers, heldout_speakers

    done = out / ".complete"
    if not done.exists():
        rng = np.random.default_rng(seed)
        corpus = root / "arabic-speech-commands"
        train12 = arabic_splits(corpus)["train12"]
        talkers = babble_talkers(root, rng, speakers=train12)
        held = set(heldout_speakers(root))
        n = int(PIECE_S * 16000)
        for line in (root / LIBRI / "MANIFEST.tsv").read_text().splitlines()[1:]:
            if not line.strip():
                continue
            spk, rel = line.split("\t")[:2]
            if spk in held:
                continue
            x = speech_audio(_read(root / LIBRI / rel))
            for i in range(min(per, len(x) // n)):
                clip = x[i * n:(i + 1) * n]
                babble = degrade.babble_noise([talkers[j] for j in rng.choice(len(talkers), 4,
                                                                                replace=False)],
                                              len(clip), rng)
                views = {"clean": clip, "babble5": degrade.mix_at_snr(clip, babble, 5.0),
                         "reverb": degrade.reverb(clip, rng), "tel8k": degrade.telephone(clip),
                         "shoebox": degrade.convolve_room(clip, degrade.shoebox_response(rng)),
                         "clean1s": clip[:16000]}
                for cond, y in views.items():
                    q = out / cond / f"{spk}_{i}.flac"
                    q.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(str(q), y, 16000, subtype="PCM_16")
        for spk in train12:
            for f in sorted((corpus / spk).glob("*.flac"))[::8]:
                q = out / "arabic" / f"{spk}_{f.stem}.flac"
                q.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(q), _read(f), 16000, subtype="PCM_16")
        done.write_text("")
    return [f for d in (*CONDITIONS, "arabic") for f in sorted((out / d).glob("*.flac"))]


def speaker_of(path: Path) -> str:
    """A cohort file's speaker (its name up to the first underscore)."""
    return path.name.split("_")[0]


def embed_rows(session, files: list[Path], cache) -> tuple[np.ndarray, list[Path]]:
    """Unit embeddings (float32 ``(n, dim)``, through the runtime path, as ``eval`` embeds) of
    the files that hold speech, and those files."""
    from rtverify.evaluation import embed_files

    emb = embed_files(session, files, cache_dir=cache).vectors
    ok = np.isfinite(emb).all(axis=1)
    return np.ascontiguousarray(emb[ok], dtype=np.float32), [f for f, k in zip(files, ok) if k]


def own_mus(vectors: np.ndarray, speakers: np.ndarray, top_k: int) -> np.ndarray:
    """Each cohort row's ``mu``: the mean of its ``top_k`` cosines with the rows of other
    speakers (as a voice the cohort does not hold would get)."""
    mus = []
    for start in range(0, len(vectors), 512):
        sims = vectors[start:start + 512] @ vectors.T
        sims[speakers[start:start + 512, None] == speakers[None, :]] = -np.inf
        top = np.sort(sims, axis=1)[:, -top_k:]
        mus.append(top.mean(axis=1))
    return np.concatenate(mus)


def own_means(vectors: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each cohort row's mean cosine with the rows of other speakers (how close a voice the
    cohort does not hold sits to strangers in general): a cosine is linear in the other row, so
    that mean is the row against the sum of the rows less its own speaker's, over their count."""
    vectors = np.asarray(vectors, np.float64)
    names, which, counts = np.unique(speakers, return_inverse=True, return_counts=True)
    own = np.zeros((len(names), vectors.shape[1]))
    np.add.at(own, which, vectors)
    others = vectors.sum(axis=0) - own[which]
    return np.einsum("ij,ij->i", vectors, others) / np.maximum(len(vectors) - counts[which], 1)


def shift_constants(vectors: np.ndarray, speakers: np.ndarray, top_k: int,
                    lowest_quantile: float | None = LOWEST_QUANTILE
                    ) -> tuple[float, float | None]:
    """``(centre, lowest)`` of a cohort: the median of :func:`own_mus` (the typical ``mu`` of a
    voice the cohort does not hold) and its ``lowest_quantile`` (None: no floor)."""
    mus = own_mus(vectors, speakers, top_k)
    lowest = None if lowest_quantile is None else float(np.quantile(mus, lowest_quantile))
    return float(np.median(mus)), lowest


@user_errors("export.cohort")
def main(argv=None) -> int:
    from rtverify.core.encoder import EncoderSession, resolve_model

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--audio", type=Path, default=Path("runs/cohort"),
                    help="where the cohort's audio is written (or read, when there)")
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=None,
                    help="the cohort file (default: <model>-cohort.npz beside the model)")
    ap.add_argument("--expert", action="store_true",
                    help="the cohort of the model's short expert, embedded by the expert, for "
                         "its scoring when it decides for this model (short_expert.score_norm "
                         "in this model's sidecar; the expert's own sidecar is left as it is)")
    ap.add_argument("--write-sidecar", action="store_true",
                    help="name the cohort in the model's sidecar (score_norm); the thresholds "
                         "must then be calibrated again")
    args = ap.parse_args(argv)

    model_path = resolve_model(args.model)
    model = session = EncoderSession(model_path, threads=1)
    if args.expert:
        if model.short_expert is None:
            ap.error(f"--expert: {args.model} has no short expert")
        session = model.short_expert[0]
    files = build_audio(args.root, args.audio)
    vectors, kept = embed_rows(session, files, args.cache)
    speakers = np.array([speaker_of(f) for f in kept])
    centre, lowest = shift_constants(vectors, speakers, args.top_k)
    out = args.out or session.path.with_name(f"{session.path.stem}-cohort.npz")
    np.savez_compressed(out, vectors=vectors, speakers=speakers)
    print(f"cohort: {len(vectors)} embeddings of {len(set(speakers))} speakers "
          f"({len(files) - len(kept)} files without speech left out), centre {centre:.4f}, "
          f"lowest {lowest:.4f} -> {out}")
    if args.write_sidecar:
        from .calibrate import write_sidecar

        if out.parent.resolve() != session.path.parent.resolve():
            ap.error("--write-sidecar needs the cohort beside the model (leave --out out)")
        block = {"method": "probe_shift", "cohort": out.name, "top_k": args.top_k,
                 "weight": args.weight, "centre": round(centre, 4), "lowest": round(lowest, 4),
                 "built": "python -m export.cohort --root ROOT --model "
                          f"{args.model}{' --expert' if args.expert else ''} --top-k "
                          f"{args.top_k} --weight {args.weight:g}"}
        if args.expert:  # into this model's short_expert block, as its sidecar holds it
            side = write_sidecar(model_path, short_expert=dict(
                model.info.raw["short_expert"], score_norm=block))
        else:
            side = write_sidecar(model_path, score_norm=block)
        print(f"wrote score_norm into {side}; calibrate the thresholds again", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
