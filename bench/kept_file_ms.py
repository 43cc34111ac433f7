"""Write the kept file of the shipped MS-ANFIC release: small_image at q4 with a checkerboard
split imposed (so both scales are exercised), and its decoded PNG, into tests/data.
Usage, once when an MS-ANFIC release ships: PYTHONPATH=. .venv/bin/python bench/kept_file_ms.py"""
import sys
import numpy as np
sys.path.insert(0, "tests")
from conftest import synthetic_image
from anfcodec import zoo, api, bitstream
from anfcodec import container as fmt
from anfcodec.imageio import pad_edge
import torch
MODEL = "ms-anfic-ckbd-n128-m256"
m = zoo.load_model(MODEL, "cpu")
img = synthetic_image(100, 70)
x = pad_edge(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255, 64)
h, w = x.shape[-2] // 32, x.shape[-1] // 32
split = torch.from_numpy((np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.uint8))
sym = m.quantize(m.analyze(x), 4.0, split)
header = fmt.Header(m.model_id, m.weights_hash, 4.0, 100, 70, "RGB", m.pad_multiple)
data = fmt.pack(fmt.Container(header, bitstream.symbols_to_chunks(m, sym)))
stem = f"tests/data/{MODEL}-{m.weights_hash.hex()[:8]}-q4"
open(stem + ".anf", "wb").write(data)
api.decode(data).save(stem + ".png")
print(stem, len(data))
