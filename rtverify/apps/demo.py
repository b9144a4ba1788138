"""``rtverify demo``: enroll the bundled speaker into a temporary store, play the bundled
conversation through ``listen`` in real time in the live console, and grade every decision
against the conversation's script (``demo/conversation.json``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..events import DecisionEvent, Event, Ready, Summary, plural
from .listen import run

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
VOICE = "alice"


class _Collect:
    """Passes events on to a sink and keeps the decisions."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.decisions = []

    def start(self, ready: Ready) -> None:
        self.sink.start(ready)

    def handle(self, event: Event) -> None:
        if isinstance(event, DecisionEvent):
            self.decisions.append(event)
        self.sink.handle(event)

    def close(self, summary: Summary) -> None:
        self.sink.close(summary)


def speaker_at(script: list[dict], start_s: float, end_s: float) -> str | None:
    """Who talks during most of [start_s, end_s] according to a script (None: nobody)."""
    best, overlap = None, 0.0
    for line in script:
        o = min(end_s, line["end_s"]) - max(start_s, line["start_s"])
        if o > overlap:
            best, overlap = line["speaker"], o
    return best


def grade(decisions: list[DecisionEvent], script: list[dict], enrolled: str, voice: str) -> dict:
    """Right and wrong decisions against the script: an utterance by ``enrolled`` must be
    accepted as ``voice``, anyone else's rejected; a decision on silence is wrong; too-short
    utterances are counted apart; script lines that got no decision are ``missed``."""
    right, wrong, short, lines = [], [], [], []
    for d in decisions:
        truth = speaker_at(script, d.start_s, d.end_s)
        if d.reason == "too_short":
            short.append((d, truth))
            continue
        ok = (d.speaker == voice) if truth == enrolled else (truth is not None and d.speaker is None)
        (right if ok else wrong).append((d, truth))
    for line in script:
        if not any(d.start_s < line["end_s"] and d.end_s > line["start_s"] for d in decisions):
            lines.append(line)
    return {"right": right, "wrong": wrong, "too_short": short, "missed": lines}


def run_demo(model: str | None = None, *, realtime: bool = True, console=None) -> int:
    from ..ui.console import ConsoleSink, ListenView, PipeConsole, clock
    from ..core.encoder import EncoderSession
    from .enroll import enroll_files
    from ..core.pipeline import Verifier
    from ..io.sources import FileSource
    from ..store.voiceprints import VoiceprintStore

    console = console or PipeConsole()
    meta = json.loads((DEMO_DIR / "conversation.json").read_text(encoding="utf-8"))
    session = EncoderSession(model)
    with tempfile.TemporaryDirectory(prefix="rtverify-demo-") as tmp:
        store = VoiceprintStore(tmp)
        takes = [DEMO_DIR / name for name in meta["enroll"]]
        enrol = enroll_files(session, takes)
        # the short expert's vector too (as enroll stores every shipped model's), so that the
        # demo decides as listen does for a voice enrolled now
        expert = [session.short_expert[0]] if session.short_expert is not None else []
        store.save(enrol.voiceprint(VOICE, session.model_id, expert))
        console.print(f"Enrolled [bold]{VOICE}[/] (LibriSpeech speaker {meta['enrolled_speaker']}) "
                      f"in a temporary store: {enrol.speech_s:.1f} s of speech from "
                      f"{', '.join(p.name for p in takes)}.", highlight=False)
        script = meta["script"]
        console.print(f"Playing {meta['conversation']}"
                      + (" in real time" if realtime else "") + f", {len(script)} lines: "
                      + ", ".join(VOICE if ln["speaker"] == meta["enrolled_speaker"]
                                  else f"speaker {ln['speaker']}" for ln in script) + ".",
                      highlight=False)
        voices, _ = store.load_usable(session.model_id, dim=session.dim,
                                      companions=session.companion_ids)
    source = FileSource(DEMO_DIR / meta["conversation"], realtime=realtime)
    verifier = Verifier(session, voices, max_pending=1 if realtime else 8, status_every_s=0.1)
    threshold = session.info.decision.describe()
    sink = _Collect(ConsoleSink(ListenView("rtverify demo", source.name.split("/")[-1],
                                           sorted(voices), threshold, tally=verifier.tally),
                                console))
    summary = run(verifier, source, sink, Ready(source.name, session.model_id, sorted(voices),
                                                threshold, realtime))
    g = grade(sink.decisions, script, meta["enrolled_speaker"], VOICE)
    n_right, n_wrong = len(g["right"]), len(g["wrong"])
    console.print(f"\nDemo result: {n_right} right, {n_wrong} wrong out of "
                  f"{plural(n_right + n_wrong, 'decision')}"
                  + (" (interrupted)." if summary["interrupted"] else "."),
                  highlight=False)
    for d, truth in g["wrong"]:
        who = "silence" if truth is None else (VOICE if truth == meta["enrolled_speaker"]
                                               else f"speaker {truth}")
        verdict = f"accepted as {d.speaker}" if d.accepted else "rejected"
        console.print(f"  wrong: {clock(d.start_s)}-{clock(d.end_s)} was {who}, {verdict} "
                      f"(score {d.score:.2f})", highlight=False)
    missed = len(g["missed"])
    console.print(f"  {plural(len(g['too_short']), 'utterance')} too short to decide; "
                  f"{len(script) - missed} of the script's {len(script)} lines got a decision.",
                  highlight=False)
    return 0
