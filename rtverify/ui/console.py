"""The live console of ``listen`` (rich): state, input level, the last utterances, running counts.

It is a sink of pipeline events (see :mod:`rtverify.apps.listen`); it never touches audio. On a
terminal it redraws in place about ten times a second and fits 80x24; when stdout is not a
terminal it prints one plain line per decision instead.
"""

from __future__ import annotations

import time
from collections import deque

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..events import (DecisionEvent, Event, InputLost, InputRestored, Provisional, Ready,
                      SegmentDropped, SpeechStarted, Status, Summary, Tally, plural)

METER_DB = 60.0
"""The level meter spans this many decibels below full scale."""


class PipeConsole(Console):
    """A rich Console whose broken pipe (``rtverify listen | head -1``) is a
    ``BrokenPipeError`` for the CLI to end on, as it does for ``--json`` (exit 0): rich's own
    handling raises ``SystemExit(1)``, and 1 means "rejected"."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError()


def clock(t_s: float) -> str:
    """Stream time as ``mm:ss.s`` (``h:mm:ss`` past an hour)."""
    if t_s >= 3600:
        h, rest = divmod(int(t_s), 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d}"
    m, s = divmod(t_s, 60)
    return f"{int(m):02d}:{s:04.1f}"


def meter(level_dbfs: float, floor_dbfs: float | None, width: int) -> Text:
    """A horizontal bar for ``level_dbfs`` on a -60..0 dBFS scale, the noise floor marked ``|``."""
    frac = min(1.0, max(0.0, (level_dbfs + METER_DB) / METER_DB))
    n = int(round(frac * width))
    bar = Text()
    for i in range(width):
        if i < n:
            style = "green" if i < 0.7 * width else ("yellow" if i < 0.9 * width else "red")
            bar.append("█", style)
        else:
            bar.append("·", "grey35")
    if floor_dbfs is not None and -METER_DB < floor_dbfs < 0:
        k = min(width - 1, int(round((floor_dbfs + METER_DB) / METER_DB * width)))
        bar.stylize("bold blue", k, k + 1)
        if k >= n:
            bar = bar[:k] + Text("|", "bold blue") + bar[k + 1:]
    return bar


def bar(frac: float, width: int, style: str = "green") -> Text:
    """A plain progress bar: ``█`` done, ``·`` to go (readable without colour too)."""
    n = int(round(min(1.0, max(0.0, frac)) * width))
    return Text("█" * n, style) + Text("·" * (width - n), "grey35")


class ListenView:
    """State of the screen, fed with events; rendered by rich."""

    def __init__(self, title: str, source: str, voices: list[str], threshold: str,
                 max_rows: int = 100, tally: Tally | None = None) -> None:
        self.title = title
        self.source = source
        self.voices = voices
        self.threshold = threshold
        self.rows: deque[DecisionEvent] = deque(maxlen=max_rows)
        self._own_tally = tally is None
        self.tally = Tally() if tally is None else tally
        """The counts shown: the verifier's own (``Verifier.tally``) when given, else the
        view counts the events it is handed."""
        self.level_dbfs = -120.0
        self.floor_dbfs: float | None = None
        self.in_speech = False
        self.speech_start_s = 0.0
        self.now_s = 0.0
        self.provisional: Provisional | None = None
        self.lost: InputLost | None = None
        """The input device is gone (an ``input_lost`` event) until ``input_restored``."""
        self.final = False
        """The stream ended: draw no empty rows."""

    def handle(self, event: Event) -> None:
        if self._own_tally:
            self.tally.add(event)
        if isinstance(event, Status):
            self.level_dbfs, self.floor_dbfs = event.level_dbfs, event.noise_floor_dbfs
            self.now_s = event.t_s
            self.in_speech = event.in_speech
        elif isinstance(event, SpeechStarted):
            self.in_speech, self.speech_start_s, self.provisional = True, event.start_s, None
        elif isinstance(event, Provisional):
            self.provisional = event
            self.now_s = max(self.now_s, event.t_s)
        elif isinstance(event, DecisionEvent):
            self.rows.append(event)
            self.in_speech, self.provisional = False, None
            self.now_s = max(self.now_s, event.end_s)
        elif isinstance(event, SegmentDropped):
            self.in_speech, self.provisional = False, None
        elif isinstance(event, InputLost):
            self.lost, self.in_speech, self.provisional = event, False, None
        elif isinstance(event, InputRestored):
            self.lost = None

    # -- rendering ------------------------------------------------------------------------
    def _state(self) -> Text:
        t = Text()
        if self.lost is not None:
            t.append(" ✖ NO INPUT ", "bold white on red")
            t.append(f" device lost; reopening: attempt {self.lost.attempt + 1} in "
                     f"{self.lost.retry_in_s:g} s", "bold")
            return t
        if self.in_speech:
            t.append(" ● SPEECH ", "bold white on red")
            t.append(f" {max(0.0, self.now_s - self.speech_start_s):4.1f} s ")
        else:
            t.append(" ○ listening ", "bold black on green")
            t.append("    ")
        t.append(" level ")
        t.append_text(meter(self.level_dbfs, self.floor_dbfs, 30))
        t.append(f" {max(self.level_dbfs, -99):3.0f} dBFS", "bold")
        if self.floor_dbfs is not None:
            t.append(f"  floor {max(self.floor_dbfs, -99):3.0f}", "blue")
        return t

    def _now(self) -> Text:
        p = self.provisional
        t = Text(f" {clock(self.now_s)}  ", "dim")
        if p is None or p.score is None:
            t.append("waiting for speech" if not self.in_speech else "listening to the speaker...",
                     "dim")
            return t
        best = max(p.scores, key=p.scores.get)
        t.append("so far: ", "dim")
        t.append(f"{best} {p.score:.2f}", "bold green" if p.speaker else "bold yellow")
        t.append(f" after {p.speech_s:.1f} s (provisional)", "dim")
        return t

    def _table(self, n_rows: int) -> Table:
        table = Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1), show_edge=False)
        table.add_column("time", width=7, no_wrap=True)
        table.add_column("speech", justify="right", width=6, no_wrap=True)
        table.add_column("best match", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column("score", justify="right", width=5, no_wrap=True)
        table.add_column("decision", width=14, no_wrap=True, overflow="ellipsis")
        table.add_column("margin", justify="right", width=6, no_wrap=True)
        rows = list(self.rows)[-n_rows:] if n_rows > 0 else []
        for d in rows:
            if d.reason == "too_short":
                verdict = Text("· too short", "dim")
            elif d.accepted:
                verdict = Text(f"✔ {d.speaker}", "bold green")
            else:
                verdict = Text("✘ unknown" if len(d.scores) > 1 else "✘ rejected", "bold red")
            table.add_row(clock(d.start_s), f"{d.speech_s:.1f} s", d.best or "-",
                          "-" if d.score is None else f"{d.score:.2f}", verdict,
                          "-" if d.margin is None else f"{d.margin:+.2f}")
        for _ in range(0 if self.final else max(0, n_rows - len(rows))):
            table.add_row("", "", "", "", "", "")
        return table

    def _counts(self) -> Text:
        c = self.tally
        t = Text(" ")
        t.append(plural(c.decisions, "decision"), "bold")
        t.append(f"  ✔ {c.accepted}", "green")
        t.append(f"  ✘ {c.rejected}", "red")
        t.append(f"  · {c.too_short} short")
        t.append(f"  overflows {c.overflows}", "bold red" if c.overflows else "dim")
        t.append("   Ctrl-C quits", "dim")
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.size.height
        # panel (4 lines) + table head (2) + counts (1) + a spare line for the cursor: the
        # counts sit on the screen's last line but one, whatever its height
        n_rows = max(1, min(self.rows.maxlen or 100, height - 8))
        voices = ", ".join(self.voices) if len(self.voices) <= 4 else f"{len(self.voices)} voices"
        header = Panel(Group(self._state(), self._now()),
                       title=f"[bold]{self.title}[/] · {self.source}",
                       subtitle=f"{voices} · threshold {self.threshold}", box=box.ROUNDED,
                       padding=(0, 0), title_align="left", subtitle_align="right")
        yield header
        yield self._table(n_rows)
        yield self._counts()


def decision_line(d: DecisionEvent) -> str:
    """One plain line for a decision (when there is no terminal to draw on)."""
    if d.reason == "too_short":
        verdict = "too short"
    elif d.accepted:
        verdict = f"ACCEPTED {d.speaker}"
    else:
        verdict = ("unknown" if len(d.scores) > 1 else "rejected") + \
            (f" (best {d.best})" if d.best else "")
    score = "-" if d.score is None else f"{d.score:.3f}"
    return (f"{clock(d.start_s)}-{clock(d.end_s)}  {d.speech_s:4.1f} s speech  "
            f"score {score}  {verdict}")


class ConsoleSink:
    """Sink for :func:`rtverify.apps.listen.run`: the live view on a terminal, else plain lines."""

    def __init__(self, view: ListenView, console: Console | None = None,
                 refresh_s: float = 0.1) -> None:
        self.view = view
        self.console = console or PipeConsole()
        self.refresh_s = refresh_s
        self.live: Live | None = None
        self._last = 0.0

    def start(self, ready: Ready) -> None:
        if self.console.is_terminal:
            # Redrawn from the pipeline's loop (not rich's timer thread), so the view is never
            # read while it changes; audio arrives at least every 100 ms, so it stays smooth.
            self.live = Live(self.view, console=self.console, auto_refresh=False,
                             screen=False, transient=False, redirect_stderr=True)
            self.live.start(refresh=True)
        else:
            self.console.print(f"{self.view.title}: {self.view.source} · voices: "
                               f"{', '.join(self.view.voices)} · threshold {self.view.threshold}",
                               highlight=False, soft_wrap=True)

    def handle(self, event: Event) -> None:
        self.view.handle(event)
        if self.live is not None:
            now = time.monotonic()
            if now - self._last >= self.refresh_s or isinstance(event, DecisionEvent):
                self._last = now
                self.live.refresh()
        elif isinstance(event, DecisionEvent):
            self.console.print(decision_line(event), highlight=False, soft_wrap=True)

    def close(self, summary: Summary) -> None:
        self.view.tally.overflows = max(self.view.tally.overflows, summary.overflows)
        if self.live is not None:
            self.view.provisional = None
            self.view.final = True
            self.live.refresh()
            self.live.stop()
        if summary.error:
            return  # the error itself is reported by the caller
        if summary.interrupted:
            self.console.print("stopped.", highlight=False)
        self.console.print(self.view.tally.summary().line(), highlight=False, soft_wrap=True)


class EnrollConsole:
    """Live enrolment on stderr: usable speech collected against what is needed, takes, a level
    meter, and one line of feedback per take above them (an ``EnrollView``)."""

    def __init__(self, need_takes: int, need_speech_s: float, source_name: str,
                 console: Console | None = None, refresh_s: float = 0.1) -> None:
        self.console = console or Console(stderr=True)
        self.need_takes, self.need_speech_s = need_takes, need_speech_s
        self.source_name = source_name
        self.refresh_s = refresh_s
        self.n_takes, self.speech_s = 0, 0.0
        self.level_dbfs, self.in_speech = -120.0, False
        self.live = Live(self, console=self.console, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False)
        self._last = 0.0

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        speech = Text(" speech ", "bold")
        speech.append_text(bar(self.speech_s / self.need_speech_s, 30))
        speech.append(f" {self.speech_s:4.1f}/{self.need_speech_s:g} s   "
                      f"takes {self.n_takes}/{self.need_takes}")
        level = Text(" level  ", "bold")
        level.append_text(meter(self.level_dbfs, None, 30))
        level.append(f" {max(self.level_dbfs, -99):3.0f} dBFS")
        if self.in_speech:
            level.append("  ● speech", "bold red")
        yield speech
        yield level

    def __enter__(self) -> "EnrollConsole":
        self.console.print(f"Recording from [bold]{self.source_name}[/]. Speak naturally, a "
                           f"sentence at a time, with short pauses: {self.need_takes} takes and "
                           f"{self.need_speech_s:g} s of speech are needed.", highlight=False)
        self.live.start(refresh=True)
        return self

    def __exit__(self, *exc) -> None:
        self.live.refresh()
        self.live.stop()

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.refresh_s:
            self._last = now
            self.live.refresh()

    def level(self, status: Status) -> None:
        self.level_dbfs, self.in_speech = status.level_dbfs, status.in_speech
        self._refresh()

    def speaking(self, start_s: float) -> None:
        self.in_speech = True
        self._refresh(force=True)

    def take(self, take, problem: str | None, enrol) -> None:
        self.n_takes, self.speech_s = len(enrol.takes), enrol.speech_s
        self.in_speech = False
        if problem is None:
            self.console.print(f"  take {self.n_takes}: [green]ok[/] ({take.speech_s:.1f} s of "
                               "speech)", highlight=False)
        else:
            self.console.print(f"  [yellow]take refused[/]: {problem}", highlight=False)
        self._refresh(force=True)
