"""Whole-process decode of one image, as a user's one-off command pays it (issue 24), beside djxl and
avifdec on the same image in the same run: medians of 5 wall times of each command, after one
untimed run (so every file is in the page cache).

- ``anfcodec decode``: the CLI as installed, which takes the torch-free decoder where it applies;
- the torch decoder: the same CLI in a process that imports torch first (what it used before);
- djxl / avifdec of JPEG XL (cjxl -e 7 -d 6) and AVIF (avifenc -s 4, quantizer 42) files of kodim01
  at about the rate of its q4 .anf (0.5-0.6 bpp).

Also each .anf file's start-up (imports, weights and program: everything before the first byte is
decoded) and decode time in a torch-blocked process (bench/decode_numpy.py), and with ``--mp N`` the
peak memory of a torch-free decode of an N-megapixel mosaic of Kodak images (int8 model).
Usage: decode_whole_process.py [IMAGE] [--mp 24]"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MODELS = ["anfic-ckbd-n64-m256-int8", "anfic-ckbd-n128-m256", "ms-anfic-ckbd-n128-m256"]
TORCH_FIRST = "import sys, torch; from anfcodec.cli import main; main(sys.argv[1:])"


def wall(cmd: list[str], runs: int = 5) -> float:
    subprocess.run(cmd, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_mb(cmd: list[str]) -> float:
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], check=True, capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def bpp(path: Path, pixels: int) -> float:
    return 8 * path.stat().st_size / pixels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image", nargs="?", default=str(ROOT.parent / "shared/data/kodak/kodim01.png"))
    ap.add_argument("--quality", type=float, default=4)
    ap.add_argument("--mp", type=float, default=0)
    args = ap.parse_args()
    from PIL import Image
    with Image.open(args.image) as im:
        pixels = im.width * im.height
    anf = shutil.which("anfcodec", path=str(Path(PY).parent)) or "anfcodec"
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for model in MODELS:
        f = tmp / f"{model}.anf"
        subprocess.run([anf, "encode", args.image, "-o", str(f), "-q", str(args.quality), "--model", model, "-f",
                        "--quiet"], check=True)
        out = tmp / "out.png"
        cli = wall([anf, "decode", str(f), "-o", str(out), "-f", "--quiet"])
        torch_cli = wall([PY, "-c", TORCH_FIRST, "decode", str(f), "-o", str(out), "-f", "--quiet"])
        parts = subprocess.run([PY, str(ROOT / "bench/decode_numpy.py"), str(f)], check=True, capture_output=True,
                               text=True).stdout
        nums = [float(v) for v in re.findall(r"([\d.]+) s", parts)]
        rows.append((f"anfcodec decode, {model}", bpp(f, pixels), cli,
                     f"torch decoder {torch_cli:.2f} s; torch-free: start-up {nums[0] + nums[1]:.2f} s "
                     f"(imports {nums[0]:.2f}, weights and program {nums[1]:.2f}), decode {nums[2]:.2f} s"))
    classical = all(shutil.which(t) for t in ("cjxl", "djxl", "avifenc", "avifdec"))
    if classical:
        jxl, avif = tmp / "x.jxl", tmp / "x.avif"
        subprocess.run(["cjxl", args.image, str(jxl), "-e", "7", "-d", "6.0", "--quiet"], check=True,
                       capture_output=True)
        subprocess.run(["avifenc", "-s", "4", "-j", "2", "--min", "42", "--max", "42", args.image, str(avif)],
                       check=True, capture_output=True)
        rows.append(("djxl (cjxl -e 7 -d 6)", bpp(jxl, pixels), wall(["djxl", str(jxl), str(tmp / "j.png")]), ""))
        rows.append(("avifdec (avifenc -s 4, q 42)", bpp(avif, pixels),
                     wall(["avifdec", "-j", "2", str(avif), str(tmp / "a.png")]), ""))
    sys.path.insert(0, str(ROOT))
    from anfcodec.benchmarks import describe_machine, machine
    caps = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES") if os.environ.get(k)]
    print(f"{describe_machine(machine())}{'; capped: ' + ', '.join(caps) if caps else ''}; "
          f"{Path(args.image).name} at q{args.quality:g}; "
          "whole process, medians of 5 after a warm run"
          + ("" if classical else "; djxl and avifdec are not installed here"))
    print("| command | bpp | wall s | ratio to djxl / avifdec | notes |")
    print("|---|---|---|---|---|")
    ref = (rows[-2][2], rows[-1][2]) if classical else None
    for name, b, s, note in rows:
        ratio = f"{s / ref[0]:.1f} / {s / ref[1]:.1f}" if ref else "n/a"
        print(f"| {name} | {b:.3f} | {s:.2f} | {ratio} | {note} |")
    if args.mp:
        from anfcodec.benchmarks.speed import mosaic
        side = (args.mp * 1e6 / 1.5) ** 0.5
        w, h = int(side * 1.5) // 64 * 64, int(side) // 64 * 64
        big = tmp / "big.png"
        mosaic(sorted((ROOT.parent / "shared/data/kodak").glob("*.png")), w, h).save(big)
        f = tmp / "big.anf"
        t = time.perf_counter()
        subprocess.run([anf, "encode", str(big), "-o", str(f), "-q", str(args.quality), "--model", MODELS[0], "-f",
                        "--quiet"], check=True)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        mb = peak_mb([PY, str(ROOT / "bench/decode_numpy.py"), str(f), str(tmp / "big-out.png")])
        print(f"{w}x{h} ({w * h / 1e6:.1f} MP), {MODELS[0]}: encode {enc:.0f} s; torch-free decode "
              f"{time.perf_counter() - t:.0f} s, peak RSS {mb:.0f} MB")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
