"""Interleaved A/B of the conv32 backend: a measurement, not a codec path.

On a noisy shared machine two benchmark runs minutes apart differ by more than a code change
does (session 17's AVX2 EPYC: CompressAI's mbt2018-mean decode 0.36 s in one run, 0.58 s in the
next). This script alternates, in one warm process, encode and bit-exact decode of kodim01 at q4
with conv32 withheld from every layer ("before") and offered where it is exact ("conv32"), and
prints the medians, every run, and whether both wrote the same file and decoded the same pixels.

    .venv/bin/python bench/ab_conv32.py [MODEL_ID] [ROUNDS]
"""
import statistics
import sys
import time

import numpy as np

from anfcodec import api, lowering

IMAGE = "../shared/data/kodak/kodim01.png"


def main(model_id: str = "anfic-ckbd-n64-m256-int8", rounds: int = 5) -> None:
    offered = lowering.Product.conv32_exact

    def use(on: bool):
        lowering.Product.conv32_exact = offered if on else (lambda self, max_abs, device: False)
        model = api.load_model(model_id)
        model._exact_synthesis = model._exact_h_s = None  # rebuild the fixed-point networks
        if hasattr(model, "_exact_context"):
            model._exact_context = None

    data = api.encode(IMAGE, 4, model_id=model_id)
    for on in (False, True):  # warm-up: each side's backend choices are made here
        use(on)
        api.encode(IMAGE, 4, model_id=model_id)
        api.decode(data)
    times = {(on, k): [] for on in (False, True) for k in ("encode", "decode")}
    last = {}
    for _ in range(rounds):
        for on in (False, True):
            use(on)
            t = time.perf_counter()
            written = api.encode(IMAGE, 4, model_id=model_id)
            times[(on, "encode")].append(time.perf_counter() - t)
            t = time.perf_counter()
            pixels = np.asarray(api.decode(data))
            times[(on, "decode")].append(time.perf_counter() - t)
            last[on] = written, pixels
    for (on, kind), v in times.items():
        print(f"{'conv32' if on else 'before':7s} {kind}: median {statistics.median(v):.3f} s  "
              + " ".join(f"{x:.2f}" for x in v))
    print("same file:", last[False][0] == last[True][0], " same pixels:", np.array_equal(last[False][1], last[True][1]))


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["anfic-ckbd-n64-m256-int8"]), *(int(a) for a in sys.argv[2:3]))
