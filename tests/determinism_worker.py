"""Encode or decode a set of images in one process, for cross-setting determinism checks.

    python tests/determinism_worker.py encode OUT QUALITIES IMAGE...   # OUT/<stem>_q<q>.anf + encoder symbols
    python tests/determinism_worker.py decode OUT                      # OUT/<name>.<tag>.png + decoder symbols

$DETERMINISM_MODEL picks the model (default: the default one).
Run it under different OMP_NUM_THREADS / ATEN_CPU_CAPABILITY settings and
compare the outputs (tests/test_determinism.py, `make determinism`).
"""
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anfcodec import api
from anfcodec import container as fmt
from anfcodec.imageio import pad_edge
from anfcodec.zoo import default_model_id, load_model


def main(argv):
    mode, out = argv[0], Path(argv[1])
    tag = os.environ.get("DETERMINISM_TAG", "run")
    model_id = os.environ.get("DETERMINISM_MODEL") or default_model_id()
    model = load_model(model_id, "cpu")
    if mode == "encode":
        qualities = [float(q) for q in argv[2].split(",")]
        for path in map(Path, argv[3:]):
            img = Image.open(path).convert("RGB")
            x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255
            for q in qualities:
                stem = f"{path.stem}_q{q:g}"
                (out / f"{stem}.anf").write_bytes(api.encode(img, quality=q, model_id=model_id))
                sym = model.compress(pad_edge(x, model.pad_multiple), q, model.default_refine(q))
                np.savez(out / f"{stem}.enc.npz", hyper=sym.hyper.numpy(), latent=sym.latent.numpy())
    else:
        for anf in sorted(out.glob("*.anf")):
            data = anf.read_bytes()
            c = fmt.unpack(data)
            sym = api.chunks_to_symbols(model, c.streams()[0], c.header.width, c.header.height)
            np.savez(out / f"{anf.stem}.{tag}.npz", hyper=sym.hyper.numpy(), latent=sym.latent.numpy())
            api.decode(data).save(out / f"{anf.stem}.{tag}.png")


if __name__ == "__main__":
    main(sys.argv[1:])
