"""anfcodec.entropy_models: compressai's blocks load without compressai's heavy package imports,
and the rest of compressai still works in the same process."""
import subprocess
import sys

import torch

from anfcodec.entropy_models import SCALE_LEVELS, SCALE_MAX, SCALE_MIN, scale_table


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_coding_does_not_import_compressais_datasets_and_registry():
    out = _run("import sys, numpy as np, anfcodec\n"
               "data = anfcodec.encode(np.zeros((64, 64, 3), np.uint8), quality=4)\n"
               "assert anfcodec.decode(data).size == (64, 64)\n"
               "print(sorted(m for m in ('torch_geometric', 'compressai.datasets', 'compressai.zoo') if m in sys.modules))")
    assert out == "[]"


def test_the_rest_of_compressai_initialises_on_first_use():
    out = _run("import torch, anfcodec.entropy_models, compressai\n"
               "print(compressai.get_entropy_coder(), sorted(compressai.available_entropy_coders())[0])\n"
               "from compressai.zoo import mbt2018_mean\n"
               "net = mbt2018_mean(quality=1, pretrained=False).eval(); net.update(force=True)\n"
               "out = net.compress(torch.rand(1, 3, 64, 64))\n"
               "print(net.decompress(out['strings'], out['shape'])['x_hat'].shape[-1], bool(compressai.__version__))")
    assert out.splitlines() == ["ans ans", "64 True"]


def test_scale_table_is_dyadic_log_spaced_and_spans_the_range():
    t = scale_table()
    assert t.dtype == torch.float64 and len(t) == SCALE_LEVELS
    assert torch.equal(t, torch.round(t * 65536) / 65536)
    assert abs(t[0].item() - SCALE_MIN) < 2**-16 and t[-1].item() == SCALE_MAX
    assert bool((t[1:] / t[:-1]).sub(t[1] / t[0]).abs().max() < 1e-3)
