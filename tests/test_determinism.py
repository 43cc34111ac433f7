"""Files decode to the same symbols whatever the thread count, CPU instruction set and arithmetic backend.

Encode with 2 threads on this CPU's own best kernels (AVX-512 or AVX2: never a level it
lacks, which would be SIGILL) and the backend measured fastest, decode with 1 thread on the
generic kernels and float64 products, and the other way round. The decoded symbols must equal the
encoder's exactly (the entropy parameters are integer-exact), and the decoded
pixels must be identical between decoder settings (the synthesis is fixed
point too). The full-Kodak version of this check is `make determinism`.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import ROOT, SAMPLE, kodak_images, synthetic_image

WORKER = ROOT / "tests" / "determinism_worker.py"
# The fast side runs the level this CPU has ("avx512", "avx2", ...: what ATEN_CPU_CAPABILITY takes).
FAST = {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": torch.backends.cpu.get_cpu_capability().lower()}
# The generic side also caps the ISA of MKL (float64 GEMMs) and oneDNN (the encoder's float path), and
# forces float64 products, so the two sides multiply with different backends as well.
SLOW = {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41", "ANFCODEC_ARITH": "float64"}


def worker(env: dict, tag: str, *args, model_id: str = ""):
    r = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, timeout=1800,
                       env={**os.environ, **env, "DETERMINISM_TAG": tag, "DETERMINISM_MODEL": model_id})
    assert r.returncode == 0, r.stderr.decode()[-2000:]


def cross_check(images: list[Path], out: Path, qualities: str = "1,4,8", model_id: str = "",
                slow_arith: str = "float64") -> int:
    """Encode under each setting, decode under both; assert exact symbols and identical pixels."""
    checked = 0
    slow = {**SLOW, "ANFCODEC_ARITH": slow_arith}
    for enc_name, enc_env in (("fast", FAST), ("slow", slow)):
        d = out / f"enc-{enc_name}"
        d.mkdir()
        worker(enc_env, "enc", "encode", d, qualities, *images, model_id=model_id)
        worker(FAST, "fast", "decode", d, model_id=model_id)
        worker(slow, "slow", "decode", d, model_id=model_id)
        for anf in sorted(d.glob("*.anf")):
            enc = np.load(d / f"{anf.stem}.enc.npz")
            for tag in ("fast", "slow"):
                dec = np.load(d / f"{anf.stem}.{tag}.npz")
                assert np.array_equal(enc["hyper"], dec["hyper"]), (anf.name, tag)
                assert np.array_equal(enc["latent"], dec["latent"]), (anf.name, tag)
            a = np.asarray(Image.open(d / f"{anf.stem}.fast.png")).astype(int)
            b = np.asarray(Image.open(d / f"{anf.stem}.slow.png")).astype(int)
            assert np.array_equal(a, b), f"{anf.name}: {int((a != b).sum())} pixel values differ between decoders"
            checked += 1
    print(f"{checked} files: symbols and decoded pixels identical across settings")
    return checked


def test_cross_setting_determinism(tmp_path):
    small = tmp_path / "small.png"
    synthetic_image(100, 70, seed=3).save(small)
    assert cross_check([small, SAMPLE], tmp_path, "1,4,8,10") == 16   # 9..10: the default's top qualities


def test_int8_synthesis_is_deterministic_across_settings(tmp_path):
    """The int8 synthesis computes in float32 between its integer products: each operation is one
    correctly rounded IEEE operation, so the generic kernels, with float32 digit-plane products
    there, must give the same pixels."""
    small = tmp_path / "small.png"
    synthetic_image(100, 70, seed=3).save(small)
    assert cross_check([small, SAMPLE], tmp_path, "1,8", model_id="anfic-ckbd-n64-m256-int8",
                       slow_arith="float32") == 8


if __name__ == "__main__":  # make determinism: the whole folder (default Kodak)
    import tempfile
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    images = sorted(folder.glob("*.png")) if folder else kodak_images()
    with tempfile.TemporaryDirectory() as td:
        n = cross_check(images, Path(td))
    print(f"determinism: {n} files checked in both directions")
