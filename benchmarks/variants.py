"""Model variants the speed levers are measured on, written under the git-ignored cache (never
over ``rtverify/models``): each is an ``.onnx`` file with its sidecar, usable with ``--model``.

- ``hopN``: the default weights, a window every N rows (80 or 160 against the shipped one).
- ``int8``: LSTM layers 2 and 3 quantized to int8 with onnxruntime's dynamic quantization
  (weights per output channel, activations quantized at run time); the first layer stays float
  because its input, raw mel power, spans too wide a range for 8 bits (quantizing it ruins the
  embeddings). New weights, so a new ``model_id``.
- ``int8-hopN``: both.
- ``fp32``: the float32 twin the export ships next to a quantized default (``<name>-fp32.onnx``),
  so the int8 speed-up is measured against it in the same run.

Only the sidecar changes for the hop; quantization needs the ``onnx`` package (the ``train``
extra), never the runtime.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from pathlib import Path

from rtverify.core.encoder import DEFAULT_MODEL, sidecar_path

def _quantized(base: Path) -> bool:
    return "quantization" in json.loads(sidecar_path(base).read_text())


def fp32_twin(base: Path = DEFAULT_MODEL) -> Path:
    """The float32 export kept next to a quantized model."""
    return base.with_name(f"{base.stem}-fp32.onnx")


def default_variants(base: Path = DEFAULT_MODEL) -> list[str]:
    """The shipped model, the other hop (80 <-> 160), and the other precision: its float32 twin
    when the shipped model is int8, else int8 and int8 with the other hop."""
    hop = json.loads(sidecar_path(base).read_text())["window"]["hop_frames"]
    other = 80 if hop != 80 else 160
    if _quantized(base):
        return ["default", f"hop{other}"] + (["fp32"] if fp32_twin(base).is_file() else [])
    return ["default", f"hop{other}", "int8", f"int8-hop{other}"]


def _parse(name: str) -> tuple[bool, int | None]:
    """``int8``, ``hopN``, ``int8-hopN`` -> (quantized, hop or None for the model's own)."""
    int8, hop = False, None
    for part in name.split("-"):
        if part == "int8" and not int8:
            int8 = True
        elif part.startswith("hop") and part[3:].isdigit() and hop is None and int(part[3:]) > 0:
            hop = int(part[3:])
        else:
            raise ValueError(f"unknown variant {name!r}: use default, int8, hopN or int8-hopN")
    return int8, hop


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_int8(src: Path, dst: Path) -> dict:
    """The export's own int8 step (LSTM layers 2-3), recording the source it was made from."""
    from export.onnx_export import quantize_int8 as quantize

    return {**quantize(src, dst), "source_sha256": _sha(src)}


def make_variant(name: str, out_dir: Path, base: Path = DEFAULT_MODEL) -> Path:
    """The ``.onnx`` path of variant ``name`` of ``base`` (built in ``out_dir`` if missing or if
    the base model changed)."""
    if name == "default":
        return base
    from rtverify.core.encoder import resolve_model, shipped_models

    if name in shipped_models():  # another shipped model (campp): measured as it ships
        return resolve_model(name)
    if name == "fp32":
        twin = fp32_twin(base)
        if not _quantized(base) or not twin.is_file():
            raise ValueError(f"variant 'fp32': {base.name} is not quantized or has no {twin.name}")
        return twin
    int8, hop = _parse(name)
    if int8 and _quantized(base):
        raise ValueError(f"variant {name!r}: {base.name} is already int8")
    side = json.loads(sidecar_path(base).read_text())
    # rebuilt when the weights or the sidecar change (a new hop, views or calibration)
    key = hashlib.sha256(_sha(base).encode() + sidecar_path(base).read_bytes()).hexdigest()
    out = out_dir / f"{base.stem}-{name}-{key[:12]}.onnx"
    if out.is_file() and sidecar_path(out).is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    new = copy.deepcopy(side)
    new["name"] = f"{side.get('name', base.stem)}-{name}"
    if int8:
        new["quantization"] = quantize_int8(base, out)
        sha = _sha(out)
        new["sha256"] = sha
        new["model_id"] = f"{side.get('name', base.stem)}-int8-{sha[:12]}"
    else:
        shutil.copyfile(base, out)
    if hop is not None:
        if hop > new["window"]["window_frames"]:
            raise ValueError(f"variant {name!r}: hop {hop} is longer than a window")
        new["window"]["hop_frames"] = hop
        # a short expert must read the same rows: the variant is measured without it (the
        # shipped default routes under 0.8 s of clean speech to it; a hop variant cannot)
        new.pop("short_expert", None)
    new.pop("export_parity", None)  # measured on the base model only
    norm = new.get("score_norm") or {}
    if isinstance(norm.get("cohort"), str):  # relative to the sidecar: the base model's, there
        norm["cohort"] = str((base.parent / norm["cohort"]).resolve())
    sidecar_path(out).write_text(json.dumps(new, indent=2) + "\n")
    return out
