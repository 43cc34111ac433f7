"""``python -m anfcodec.training.report runs/NAME/log.jsonl``: the validation trajectory as Markdown.

One row per validation point (real rounding, 256x256 centre crops of the
held-out photographs): steps, CPU-hours, and bpp / PSNR at qualities 1, 4, 8.
This is the "RD per CPU-hour" record the training issue asks for.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def rows(log: Path) -> list[dict]:
    out = []
    for line in Path(log).read_text().splitlines():
        d = json.loads(line)
        if "val" in d and all(math.isfinite(v["psnr"]) for v in d["val"].values()):
            out.append(d)
    return out


def markdown(log: Path) -> str:
    lines = ["| step | CPU-hours | q1 bpp / dB | q4 bpp / dB | q8 bpp / dB |", "|---|---|---|---|---|"]
    for d in rows(log):
        cells = [f"{d['val'][q]['bpp']:.3f} / {d['val'][q]['psnr']:.2f}" for q in ("1.0", "4.0", "8.0")]
        lines.append(f"| {d['step']} | {d['cpu_h']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(Path(sys.argv[1])))
