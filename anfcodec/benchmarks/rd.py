"""``anfcodec bench``: RD curves of anfcodec and classical codecs on a folder of images.

anfcodec is measured through the real CLI commands (in-process, Click's
runner): bpp from the .anf file size, PSNR and MS-SSIM on the decoded 8-bit PNG. The
classical codecs run through Pillow (JPEG 4:2:0 and 4:4:4, WebP, AVIF) and
``cjxl``/``djxl`` when installed, with the settings of
``../shared/anchors/kodak_measured.json`` so the two can be cross-checked.
Writes ``<out>/bench.json``, ``<out>/bench.md`` and ``<out>/rd.png``.
"""
from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..metrics import bd_rate, ms_ssim, ms_ssim_db, psnr

ANFCODEC = "anfcodec"
# name -> (settings text, list of (label, encode function(img) -> bytes, decode(bytes) -> array))
PILLOW_CODECS = {
    "JPEG (libjpeg-turbo 4:2:0)": ("JPEG", [10, 20, 30, 40, 50, 60, 70, 80, 90, 95], {}),
    "JPEG (libjpeg-turbo 4:4:4)": ("JPEG", [10, 20, 30, 40, 50, 60, 70, 80, 90, 95], {"subsampling": 0}),
    "WebP (libwebp m6)": ("WEBP", [5, 15, 30, 45, 60, 75, 85, 95], {"method": 6}),
    "AVIF (libavif/aom s4 4:4:4)": ("AVIF", [10, 25, 40, 55, 70, 80, 90], {"speed": 4, "subsampling": "4:4:4"}),
}
JXL = "JPEG XL (cjxl 0.7 e7)"
JXL_DISTANCES = [8, 5, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5]


def _pillow_point(img: Image.Image, fmt: str, q: int, extra: dict) -> tuple[int, np.ndarray, float]:
    t = time.perf_counter()
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=q, **extra)
    data = buf.getvalue()
    rec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return len(data), rec, time.perf_counter() - t


def _jxl_point(path: Path, distance: float, tmp: Path) -> tuple[int, np.ndarray, float]:
    t = time.perf_counter()
    jxl, png = tmp / "x.jxl", tmp / "x.png"
    subprocess.run(["cjxl", str(path), str(jxl), "-d", str(distance), "-e", "7", "--quiet"], check=True,
                   capture_output=True)
    subprocess.run(["djxl", str(jxl), str(png), "--quiet"], check=True, capture_output=True)
    return jxl.stat().st_size, np.asarray(Image.open(png).convert("RGB")), time.perf_counter() - t


def _anf_point(path: Path, quality: float, tmp: Path, runner, main,
               model_id: str | None = None) -> tuple[int, np.ndarray, float, float, float | None]:
    """(bytes, decoded RGB, encode s, decode s, share of the area coded fine or None if single-scale)."""
    from ..container import describe
    anf, png = tmp / "x.anf", tmp / "x.png"
    t = time.perf_counter()
    r = runner.invoke(main, ["encode", str(path), "-o", str(anf), "-q", str(quality), "-f",
                             *(["--model", model_id] if model_id else [])])
    t_enc = time.perf_counter() - t
    if r.exit_code:
        raise RuntimeError(f"encode {path} failed: {r.output}")
    t = time.perf_counter()
    r = runner.invoke(main, ["decode", str(anf), "-o", str(png), "-f"])
    t_dec = time.perf_counter() - t
    if r.exit_code:
        raise RuntimeError(f"decode {path} failed: {r.output}")
    scales = describe(anf.read_bytes())["scales"]   # what `anfcodec info` shows
    return (anf.stat().st_size, np.asarray(Image.open(png).convert("RGB")), t_enc, t_dec,
            scales["fine"]["share"] if scales else None)


def run(folder: Path, out: Path, qualities: list[float], classical: bool = True, anchors: Path | None = None,
        reuse_classical: bool = False, classical_from: Path | None = None, limit: int | None = None,
        model_id: str | None = None, compare: dict[str, Path] | None = None) -> dict:
    """RD curves of anfcodec (``model_id``, default the shipped one) and the classical codecs.

    ``compare`` adds the anfcodec curves of earlier runs (label -> their bench.json) for
    BD-rates between models, overall and per image (ablations).
    """
    from click.testing import CliRunner
    from ..cli import main

    images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == ".png")[:limit]
    if not images:
        raise SystemExit(f"no PNG images in {folder}")
    codecs: dict[str, dict] = {}
    points: dict[str, list] = {}
    jobs = [(ANFCODEC, q) for q in qualities]
    previous = out / "bench.json"
    sources = {}
    if reuse_classical and previous.exists():
        # Classical codecs are deterministic: reuse their curves from the last run on the same folder.
        prev = json.loads(previous.read_text())
        if prev.get("folder") == str(folder):
            reused = {k: v for k, v in prev["codecs"].items() if k != ANFCODEC}
            codecs.update(reused)
            sources.update({k: prev.get("classical_sources", {}).get(k, f"earlier run ({previous})") for k in reused})
            classical = False
    if classical_from is not None:
        # Curves measured elsewhere on the same images (e.g. the shared anchors), labelled as such.
        for name, c in json.loads(Path(classical_from).read_text()).items():
            codecs[name] = {"bpp": c["bpp"], "psnr": c["psnr"], "settings": c.get("settings"),
                            **({"ms_ssim": c["ms_ssim"]} if "ms_ssim" in c else {})}
            sources[name] = str(classical_from)
        classical = False
    if classical:
        jobs += [(name, q) for name, (_, qs, _) in PILLOW_CODECS.items() for q in qs]
        if shutil.which("cjxl") and shutil.which("djxl"):
            jobs += [(JXL, d) for d in JXL_DISTANCES]
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        bar = tqdm(total=len(jobs) * len(images), desc="bench", unit="img")
        for name, setting in jobs:
            rows = []
            for path in images:
                img = Image.open(path).convert("RGB")
                ref = np.asarray(img)
                pixels = ref.shape[0] * ref.shape[1]
                fine = None
                if name == ANFCODEC:
                    size, rec, te, tdec, fine = _anf_point(path, setting, tmp, runner, main, model_id)
                elif name == JXL:
                    size, rec, te = _jxl_point(path, setting, tmp); tdec = 0.0
                else:
                    fmt, _, extra = PILLOW_CODECS[name]
                    size, rec, te = _pillow_point(img, fmt, setting, extra); tdec = 0.0
                rows.append({"image": path.name, "bpp": 8 * size / pixels, "psnr": psnr(ref, rec),
                             "ms_ssim": ms_ssim(ref, rec), "enc_s": te,
                             "dec_s": tdec, **({"fine_share": fine} if fine is not None else {})})
                bar.update(1)
            points.setdefault(name, []).append({"setting": setting, "images": rows})
        bar.close()
    for name, plist in points.items():
        codecs[name] = {
            "settings": [p["setting"] for p in plist],
            "bpp": [float(np.mean([r["bpp"] for r in p["images"]])) for p in plist],
            "psnr": [float(np.mean([r["psnr"] for r in p["images"]])) for p in plist],
            **_ms_ssim_curve(plist),
            "enc_s": [float(np.median([r["enc_s"] for r in p["images"]])) for p in plist],
            "dec_s": [float(np.median([r["dec_s"] for r in p["images"]])) for p in plist],
        }
    # No qualities: the classical codecs alone (the anchor cross-check, or curves to --reuse-classical).
    result = {"folder": str(folder), "images": len(images), "codecs": codecs, "classical_sources": sources,
              "per_image": {ANFCODEC: points.get(ANFCODEC, [])}, "bd_rate_vs": {}}
    if ANFCODEC in codecs:
        result["bd_rate_vs"] = {name: bd_rate(c["bpp"], c["psnr"], codecs[ANFCODEC]["bpp"], codecs[ANFCODEC]["psnr"])
                                for name, c in codecs.items() if name != ANFCODEC}
        result["bd_rate_ms_ssim_vs"] = {name: _bd_ms_ssim(c, codecs[ANFCODEC])
                                        for name, c in codecs.items() if name != ANFCODEC}
    if ANFCODEC in codecs:
        from ..zoo import default_model_id
        result["model"] = model_id or default_model_id()
    if compare and ANFCODEC in codecs:
        result["compare"] = compare_runs(result, compare)
    if anchors and Path(anchors).exists() and not classical_from:
        result["anchor_check"] = anchor_check(codecs, json.loads(Path(anchors).read_text()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(markdown(result))
    plot(result, out / "rd.png", anchors)
    if ANFCODEC in codecs and "ms_ssim" in codecs[ANFCODEC]:
        plot_ms_ssim(result, out / "rd-msssim.png")
    return result


def _ms_ssim_curve(plist: list) -> dict:
    """Mean MS-SSIM per point, and its dB form; nothing when an image was too small for it."""
    values = [[r.get("ms_ssim") for r in p["images"]] for p in plist]
    if any(v is None for vs in values for v in vs):
        return {}
    means = [float(np.mean(vs)) for vs in values]
    return {"ms_ssim": means, "ms_ssim_db": [ms_ssim_db(m) for m in means]}


def _bd_ms_ssim(anchor: dict, test: dict) -> float | None:
    """BD-rate at equal MS-SSIM (in dB); None where either curve has no MS-SSIM."""
    if "ms_ssim" not in anchor or "ms_ssim" not in test:
        return None
    db = [[ms_ssim_db(v) for v in c["ms_ssim"]] for c in (anchor, test)]
    return bd_rate(anchor["bpp"], db[0], test["bpp"], db[1])


def _common_curves(mine: dict, theirs: dict) -> tuple[dict, dict, list]:
    """Both runs' mean curves over the images and qualities both measured (a run on a subset,
    --limit or --qualities, compares with a full one on that subset, not against its means),
    and those qualities."""
    def table(run):
        return {(p["setting"], r["image"]): r for p in run["per_image"][ANFCODEC] for r in p["images"]}
    a, b = table(mine), table(theirs)
    images = sorted({i for _, i in a} & {i for _, i in b})
    settings = sorted({s for s, i in a if i in images and all((s, j) in a and (s, j) in b for j in images)})

    def mean(t):
        rows = [[t[(s, i)] for i in images] for s in settings]
        curve = {k: [float(np.mean([r[k] for r in rs])) for rs in rows] for k in ("bpp", "psnr")}
        if all("ms_ssim" in r for rs in rows for r in rs):
            curve["ms_ssim"] = [float(np.mean([r["ms_ssim"] for r in rs])) for rs in rows]
        return curve
    return mean(a), mean(b), settings


def compare_runs(result: dict, others: dict[str, Path]) -> dict:
    """BD-rate of this run's anfcodec curve against other runs', overall (on the images and
    qualities both runs measured) and per image."""
    out = {}
    for label, path in others.items():
        other = json.loads(Path(path).read_text())
        mine, theirs, settings = _common_curves(result, other)

        def curve(run, name):
            rows = [next(r for r in p["images"] if r["image"] == name) for p in run["per_image"][ANFCODEC]
                    if p["setting"] in settings]
            return [r["bpp"] for r in rows], [r["psnr"] for r in rows]
        per_image = {name: bd_rate(*curve(other, name), *curve(result, name))
                     for name in [r["image"] for r in result["per_image"][ANFCODEC][0]["images"]]}
        out[label] = {"model": other.get("model"), "file": str(path), "bd_rate": bd_rate(
            theirs["bpp"], theirs["psnr"], mine["bpp"], mine["psnr"]), "bd_rate_ms_ssim": _bd_ms_ssim(theirs, mine),
            "per_image": per_image,
            "bpp": theirs["bpp"], "psnr": theirs["psnr"]}
    return out


def anchor_check(codecs: dict, anchors: dict) -> dict:
    """Largest PSNR difference (dB) at equal settings between our classical runs and the shared anchors."""
    out = {}
    for name, c in codecs.items():
        if name in anchors and len(anchors[name]["psnr"]) == len(c["psnr"]):
            out[name] = float(np.max(np.abs(np.array(anchors[name]["psnr"]) - np.array(c["psnr"]))))
    return out


def markdown(result: dict) -> str:
    lines = [f"Images: {result['images']} from `{result['folder']}`", ""]
    a = result["codecs"].get(ANFCODEC)
    if a:
        ms_values = a.get("ms_ssim", [None] * len(a["bpp"]))
        lines += ["| quality | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | encode s | decode s |",
                  "|---|---|---|---|---|---|---|"]
        for s, b, p, m, e, d in zip(a["settings"], a["bpp"], a["psnr"], ms_values, a["enc_s"], a["dec_s"]):
            ms = "n/a | n/a" if m is None else f"{m:.4f} | {ms_ssim_db(m):.2f}"
            lines.append(f"| {s:g} | {b:.4f} | {p:.2f} | {ms} | {e:.2f} | {d:.2f} |")
        lines += ["", "| anfcodec BD-rate vs | % at equal PSNR (negative = anfcodec smaller) | % at equal MS-SSIM (dB) "
                  "| curve measured by |", "|---|---|---|---|"]

    def pct(v, missing="no overlap"):
        return missing if v is None else f"{v:+.1f}"
    ms = result.get("bd_rate_ms_ssim_vs", {})
    for name, v in result["bd_rate_vs"].items():
        src = result.get("classical_sources", {}).get(name, "this run")
        lines.append(f"| {name} | {pct(v)} | {pct(ms.get(name), 'not measured')} | {src} |")
    for label, c in result.get("compare", {}).items():
        lines.append(f"| {label} (anfcodec, {c['model']}) | {pct(c['bd_rate'])} | "
                     f"{pct(c.get('bd_rate_ms_ssim'), 'not measured')} | {c['file']} |")
    for label, c in result.get("compare", {}).items():
        lines += ["", f"Per image, BD-rate against {label}: " + ", ".join(
            f"{k.split('.')[0]} {'n/a' if v is None else f'{v:+.1f}'}" for k, v in c["per_image"].items())]
    shares = [(p["setting"], [r.get("fine_share") for r in p["images"]])
              for p in result.get("per_image", {}).get(ANFCODEC, [])]
    if shares and all(v is not None for _, vs in shares for v in vs):
        lines += ["", "Share of the area coded at the fine scale (per image, from `anfcodec info`):", "",
                  "| quality | mean | min | max | images with one scale above 90% |", "|---|---|---|---|---|"]
        for q, vs in shares:
            lines.append(f"| {q:g} | {np.mean(vs):.2f} | {min(vs):.2f} | {max(vs):.2f} | "
                         f"{sum(v > 0.9 or v < 0.1 for v in vs)} of {len(vs)} |")
    if result.get("anchor_check"):
        lines += ["", "| classical codec | max PSNR difference to shared anchors (dB) |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in result["anchor_check"].items()]
    return "\n".join(lines) + "\n"


def _figure(result: dict, metric):
    """A figure with every codec's curve of ``metric(codec) -> values`` (None: the codec lacks it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 6))
    for name, c in result["codecs"].items():
        if metric(c) is None:
            continue
        style = dict(lw=2.5, marker="o", color="black") if name == ANFCODEC else dict(lw=1, marker=".")
        label = f"anfcodec ({result['model']})" if name == ANFCODEC and result.get("model") else name
        ax.plot(c["bpp"], metric(c), label=label, **style)
    # The classical curves run far past 2 bpp; show them up to where anfcodec's own curve ends.
    ours = result["codecs"].get(ANFCODEC, {"bpp": [0.0], "psnr": [0.0]})
    ax.set_xlim(0, max(2.0, 1.05 * max(ours["bpp"])))
    ax.set_xlabel("bits per pixel")
    return plt, fig, ax


def _save(plt, fig, ax, path: Path, title: str) -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(result: dict, path: Path, anchors: Path | None = None) -> None:
    plt, fig, ax = _figure(result, lambda c: c["psnr"])
    for label, c in result.get("compare", {}).items():
        ax.plot(c["bpp"], c["psnr"], lw=2, marker="s", ls="--", label=f"{label} ({c['model'] or 'anfcodec'})")
    if anchors and Path(anchors).with_name("kodak_compressai_published.json").exists():
        pub = json.loads(Path(anchors).with_name("kodak_compressai_published.json").read_text())
        if "mbt2018-mean" in pub:
            ax.plot(pub["mbt2018-mean"]["bpp"], pub["mbt2018-mean"]["psnr"], "--", color="gray",
                    label="mbt2018-mean (CompressAI, published, GPU-trained)")
    ax.set_ylabel("PSNR-RGB (dB)")
    ours = result["codecs"].get(ANFCODEC, {"bpp": [0.0], "psnr": [0.0]})
    ax.set_ylim(24, max(42.0, math.ceil(max(ours["psnr"])) + 1))
    _save(plt, fig, ax, path, f"Rate-distortion on {Path(result['folder']).name} ({result['images']} images)")


def plot_ms_ssim(result: dict, path: Path) -> None:
    """The MS-SSIM (dB) curves of every codec that has them."""
    plt, fig, ax = _figure(result, lambda c: [ms_ssim_db(v) for v in c["ms_ssim"]] if "ms_ssim" in c else None)
    ax.set_ylabel("MS-SSIM (dB), -10 log10(1 - MS-SSIM), RGB")
    _save(plt, fig, ax, path, f"MS-SSIM on {Path(result['folder']).name} ({result['images']} images)")
