"""Export a training checkpoint as shipped weights plus its manifest entry.

Large tensors are stored in fp16 (the decoder loads them back to fp32, the
same values on both sides); the frozen entropy tables stay integers.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..models import build_model
from ..zoo import MANIFEST, sha256_file

TRAIN_DATA_NOTE = "shared/data/train (70 photographs, hash-selected validation split held out)"


def default_model_id(checkpoint: Path) -> str:
    """Stable id naming the architecture and its widths, e.g. anfic-n128-m256."""
    config = torch.load(checkpoint, map_location="cpu", weights_only=False)["config"]
    return f"{config['arch']}-n{config['N']}-m{config['M']}"


CALIBRATION_PHOTOS = 3   # int8 synthesis scales: 512x512 crops of the first photographs of the training folder
CALIBRATION_CROP = 512


def calibration_images(data_dir: Path) -> list[torch.Tensor]:
    from PIL import Image
    photos = sorted(p for p in Path(data_dir).iterdir() if p.suffix.lower() == ".png")[:CALIBRATION_PHOTOS]
    if not photos:
        raise FileNotFoundError(f"no PNG photographs in {data_dir} to calibrate the int8 synthesis on")
    out = []
    for p in photos:
        with Image.open(p) as im:
            crop = im.convert("RGB").crop((0, 0, CALIBRATION_CROP, CALIBRATION_CROP))
        out.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None].float() / 255)
    return out


def release_checkpoint(model_id: str) -> dict:
    """An installed release as a checkpoint: its weights, config and training counters (to ship the
    same weights with another synthesis)."""
    from ..zoo import WEIGHTS_DIR, find_entry, load_state_dict_file
    entry = find_entry(model_id)
    t = entry.get("training", {})
    best = t.get("best_validation_loss")
    counters = {"step": t.get("steps", 0), "cpu_seconds": 3600 * t.get("cpu_hours", 0.0),
                "wall_seconds": 3600 * t.get("wall_hours", 0.0), "gpu_seconds": 3600 * t.get("gpu_hours", 0.0),
                "best_val": math.inf if best is None else best}
    return {"model": load_state_dict_file(WEIGHTS_DIR / entry["file"]), "config": dict(entry["config"]),
            "counters": counters}


def export(checkpoint: Path | dict, weights_dir: Path, model_id: str, make_default: bool = True,
           synthesis: str | None = None, calibration_dir: Path | None = None) -> dict:
    """``checkpoint``: a training checkpoint's path, or one from ``release_checkpoint``.
    ``synthesis="int8"`` ships it with the int8 bit-exact synthesis (``int8net``), its activation
    scales measured on photographs from ``calibration_dir``."""
    state = checkpoint if isinstance(checkpoint, dict) else torch.load(checkpoint, map_location="cpu", weights_only=False)
    if synthesis and synthesis != state["config"].get("synthesis", "fixed"):
        state["config"] = {**state["config"], "synthesis": synthesis}
        # the validation loss was measured with the other synthesis: it does not describe this release
        state["counters"] = {**state["counters"], "best_val": math.inf}
    model = build_model(state["config"])
    int8 = state["config"].get("synthesis") == "int8"
    model.load_state_dict({**state["model"], **({"int8_scales": model.int8_scales} if int8 else {})})
    model.update_tables()

    def shipped() -> dict:  # large tensors in fp16 (the decoder loads them back to fp32: the same values)
        return {k: (v.half() if v.is_floating_point() and v.numel() > 4096 else v) for k, v in model.state_dict().items()}
    sd = shipped()
    # From here on the model holds the weights as they ship, fp16-rounded: the int8 scales are
    # measured with them and the decoder program is compiled from them.
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    if int8:
        from ..int8net import calibrate
        model.int8_scales.copy_(calibrate(model, calibration_images(calibration_dir)))
        sd = shipped()
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=weights_dir, delete=False) as f:
        torch.save(sd, f)
    os.chmod(f.name, 0o644)
    digest = sha256_file(Path(f.name))
    # Named by content: a release never overwrites the weights that older files need.
    path = weights_dir / f"{model_id}-{digest[:8]}.pt"
    os.replace(f.name, path)
    counters = state["counters"]
    entry = {
        "file": path.name,
        "sha256": digest,
        "config": state["config"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": {
            "steps": counters["step"],
            "cpu_hours": round(counters["cpu_seconds"] / 3600, 3),
            "wall_hours": round(counters["wall_seconds"] / 3600, 3),
            "gpu_hours": round(counters.get("gpu_seconds", 0.0) / 3600, 3),
            "best_validation_loss": counters["best_val"] if math.isfinite(counters.get("best_val", math.inf)) else None,
            "data": TRAIN_DATA_NOTE,
        },
    }
    program = write_decoder_program(model, path)
    if program is not None:
        entry["decoder"] = program
    mpath = weights_dir / MANIFEST
    man = json.loads(mpath.read_text()) if mpath.exists() else {"format": 1, "models": {}}
    replaced = man["models"].get(model_id)
    if replaced and replaced["sha256"] != digest:
        # Files written with the replaced weights name them by hash: keep them decodable.
        man.setdefault("previous", []).append({"id": model_id, **replaced})
    man["models"][model_id] = entry
    if make_default or "default" not in man:
        man["default"] = model_id
    mpath.write_text(json.dumps(man, indent=2) + "\n")
    return entry


def write_decoder_program(model, weights_path: Path) -> dict | None:
    """The torch-free decoder's program of a model (``ANFIC.decoder_program``) beside its weights
    file, named after it: the manifest entry's ``decoder`` (file and SHA-256). None for a model
    the torch-free decoder does not run (its files need the torch decoder)."""
    from ..decoder import program as prog
    from ..decoder.model import DecoderModel
    described = model.decoder_program()
    if described is None:
        return None
    spec, derived = described
    arrays = {**{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, **derived}
    DecoderModel.build(spec, arrays)  # compiles: records the decoder's forms of every weight in arrays
    path = Path(weights_path).with_suffix(".decoder.npz")
    prog.save(path, spec, prog.compiled_arrays(spec, arrays))
    os.chmod(path, 0o644)
    return {"file": path.name, "sha256": sha256_file(path)}


def export_decoder_programs(weights_dir: Path | None = None) -> list[str]:
    """Write the decoder program of every release in the manifest, current and previous (releases
    from before the torch-free decoder have none); returns the files written."""
    from ..zoo import WEIGHTS_DIR, load_model
    wdir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    mpath = wdir / MANIFEST
    man = json.loads(mpath.read_text())
    written = []
    for model_id, entry in [*man["models"].items(), *((e["id"], e) for e in man.get("previous", []))]:
        model = load_model(model_id, weights_dir=str(wdir), weights_hash=bytes.fromhex(entry["sha256"][:16]))
        program = write_decoder_program(model, wdir / entry["file"])
        if program is not None:
            entry["decoder"] = program
            written.append(program["file"])
    mpath.write_text(json.dumps(man, indent=2) + "\n")
    return written
