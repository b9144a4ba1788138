"""What `enroll --add` buys: a clean 3-take voiceprint with one more take from the room it is used in.

    python -m training.dev_lists --root ../shared/data --out runs/dev
    python -m tools.add_takes --dev runs/dev --cond reverb      # writes runs/dev/reverb-vp3add*.txt
    rtverify eval --trials runs/dev/reverb-vp3base.txt --root runs/dev --json
    rtverify eval --trials runs/dev/reverb-vp3add.txt --root runs/dev --json

From ``<cond>-vp3.txt`` (three clean takes against one probe in the condition, see
:mod:`training.dev_lists`) three lists over the same trials:

* ``<cond>-vp3base.txt``: the voiceprints as they are;
* ``<cond>-vp3add.txt``: each voiceprint with a fourth take, one of the speaker's probes *in the
  condition* (another room or another babble than the probe's, from the other half of the
  speaker's probes, the half the voiceprint's trials come from);
* ``<cond>-vp3clean4.txt``: the control, a fourth *clean* take instead (that clip's clean twin),
  to tell the room's share from one more take's.

and, with the probes swapped for their clean twins (what the room take costs on clean speech),
``<cond>-vp3base-cleanprobes.txt`` and ``<cond>-vp3add-cleanprobes.txt``.

A target trial whose probe is the added take itself is left out of all three. A ``+``-joined
voiceprint is enrolled as ``enroll`` enrolls takes together; ``enroll --add`` weights the old
voiceprint as its number of takes instead (``l2(3 * l2(mean3) + take)``), the same direction up
to the old mean's length.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def probe_index(path: str) -> int:
    return int(Path(path).stem.rsplit("_", 1)[1])


def build(lines: list[str], cond: str) -> tuple[list[str], list[str], list[str]]:
    """The three lists' lines (see the module doc)."""
    trials = [ln.split() for ln in lines if ln.strip()]
    probes: dict[str, set[int]] = {}
    for _, _, b in trials:  # which of the speaker's probes exist in the condition
        spk = Path(b).parent.name
        probes.setdefault(spk, set()).add(probe_index(b))
    for _, a, _ in trials:
        for take in a.split("+"):
            probes.setdefault(Path(take).parent.name, set())

    def added(vp: str) -> int | None:
        """The probe to add to voiceprint ``vp``: the first of the other half that exists."""
        takes = vp.split("+")
        spk = Path(takes[0]).parent.name
        used = {probe_index(t) for t in takes}
        other = [i for i in sorted(probes[spk]) if i not in used]
        return other[0] if other else None

    base, add, clean4 = [], [], []
    for label, a, b in trials:
        k = added(a)
        if k is None:
            continue
        spk = Path(a.split("+")[0]).parent.name
        if label == "1" and probe_index(b) == k:
            continue
        base.append(f"{label} {a} {b}")
        add.append(f"{label} {a}+{cond}/{spk}/{spk}_{k}.flac {b}")
        clean4.append(f"{label} {a}+clean/{spk}/{spk}_{k}.flac {b}")
    return base, add, clean4


def clean_probe(line: str) -> str:
    """The trial with its probe's clean twin (``reverb/s/s_2.flac`` -> ``clean/s/s_2.flac``)."""
    label, a, b = line.split()
    return f"{label} {a} clean/{b.split('/', 1)[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.add_takes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", type=Path, default=Path("runs/dev"))
    ap.add_argument("--cond", action="append", required=True,
                    help="condition of <cond>-vp3.txt (repeatable): reverb, shoebox, babble5, ...")
    args = ap.parse_args(argv)
    for cond in args.cond:
        src = args.dev / f"{cond}-vp3.txt"
        base, add, clean4 = build(src.read_text().splitlines(), cond)
        clean = {k: [clean_probe(ln) for ln in v] for k, v in (("base", base), ("add", add))}
        for suffix, lines in (("base", base), ("add", add), ("clean4", clean4),
                              ("base-cleanprobes", clean["base"]),
                              ("add-cleanprobes", clean["add"])):
            (args.dev / f"{cond}-vp3{suffix}.txt").write_text("\n".join(lines) + "\n")
        same = sum(ln.startswith("1 ") for ln in base)
        print(f"{cond}: {same} same / {len(base) - same} different -> "
              f"{args.dev}/{cond}-vp3{{base,add,clean4}}[-cleanprobes].txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
