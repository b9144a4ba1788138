"""python -m training {pairs,ge2e}: train a speaker encoder.

    python -m training pairs --name pairs-seed            # the seed's Siamese baseline, from scratch
    python -m training ge2e --name ge2e-ft                 # fine-tune the pretrained GE2E encoder
    python -m training ge2e --name ge2e-ft                 # again: continues from runs/ge2e-ft/last.pt
    python -m training eval runs/ge2e-ft/best.pt           # EERs through the runtime path

Checkpoints, config.json and metrics.jsonl go to runs/<name>/. Set OMP_NUM_THREADS=1 on a shared
machine; --threads sets torch's own thread count (default 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .cli import message, user_errors

OBJECTIVE_DEFAULTS = {
    # the seed: a 2-layer LSTM and a dense layer, trained from scratch on log spectrograms
    "pairs": dict(name="pairs", data=["arabic:train18"], init="scratch", layers=2, hidden=256,
                  proj=128, relu=False, input_transform="logcmn", reverse_time=True, lr=1e-3,
                  steps=1000, warmup_steps=50, eval_every=100, ckpt_every=100),
    # production: the pretrained GE2E encoder, fine-tuned on train12, held near where it started
    "ge2e": dict(name="ge2e", data=["arabic:train12"], init="resemblyzer", layers=3, hidden=256,
                 proj=256, relu=True, input_transform="level", lr=1e-4, steps=300, distill=5.0,
                 p_concat=0.5, eval_every=25, ckpt_every=25),
}


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    fields = TrainConfig.__dataclass_fields__
    for objective in ("pairs", "ge2e"):
        p = sub.add_parser(objective, help=f"train with the {objective} objective")
        d = {**TrainConfig().to_dict(), **OBJECTIVE_DEFAULTS[objective]}
        p.add_argument("--resume", action="store_true",
                       help="require a run to continue: runs/<name>/last.pt (a run folder that "
                            "holds one is continued anyway)")
        p.add_argument("--out", type=Path, help="run folder (default: runs/<name>)")
        for key, f in fields.items():
            if key == "objective":
                continue
            flag = "--" + key.replace("_", "-")
            default = d[key]
            if isinstance(default, bool):
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            elif isinstance(default, list):
                p.add_argument(flag, nargs="+", default=default)
            else:
                p.add_argument(flag, type=type(default), default=default,
                               help=f"(default: {default})")
    e = sub.add_parser("eval", help="EER of checkpoints / ONNX models through the runtime path")
    e.add_argument("models", type=Path, nargs="+", help="training checkpoints (.pt) or .onnx files")
    e.add_argument("--lists", nargs="+", help="trial list names (default: all four)")
    e.add_argument("--json", type=Path, help="write the results here")
    return ap


def run_eval(args) -> int:
    from .evaluate import TRIAL_LISTS, evaluate_model, evaluate_torch_model, format_table

    lists = args.lists or list(TRIAL_LISTS)
    results = {}
    for m in args.models:
        if m.suffix == ".onnx":
            r = evaluate_model(m, lists)
        else:
            from .checkpoint import load_for_export

            model, _ = load_for_export(m)
            r = evaluate_torch_model(model, lists)
        results[str(m)] = r
        print(json.dumps(r), flush=True)
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


@user_errors("training")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "eval":
        return run_eval(args)
    from .train import RUNS, TrainConfig, Trainer

    values = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if k != "objective"}
    cfg = TrainConfig(objective=args.command, **values)
    out = args.out if args.out is not None else RUNS / cfg.name
    resume = (out / "last.pt").exists()  # resumed by default: a killed run goes on
    if args.resume and not resume:
        raise ValueError(f"{out / 'last.pt'}: no run to resume")
    if not resume and (out / "best.pt").exists():  # a new run would write over it
        raise ValueError(f"{out} already holds a run's best.pt but no last.pt to continue "
                         "from: start a new run under another --name/--out")
    try:
        trainer = Trainer(cfg, out)
        if resume:
            trainer.resume(trainer.out / "last.pt")
            print(f"resumed {trainer.out / 'last.pt'} at step {trainer.step}", file=sys.stderr)
        trainer.run()
    except RuntimeError as err:  # torch's own, e.g. a process group that cannot form
        print(f"training: {message(err)}", file=sys.stderr)
        return 2
    finally:
        from .distributed import cleanup

        cleanup()
    best = trainer.best
    if best is not None:
        print(f"best {best['list']} EER {100 * best['eer']:.2f} % at step {best['step']} "
              f"-> {trainer.out / 'best.pt'}")
    return 0


if __name__ == "__main__":
    code = main()
    # a torchrun worker (training.distributed.launched_by_torchrun, asked without importing
    # torch for --help): end it as training.distributed.exit_process says why
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        from .distributed import exit_process

        exit_process(code)
    raise SystemExit(code)
