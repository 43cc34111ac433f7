"""Whole-process decode with the torch-free decoder, torch blocked: imports, weights and program,
decode (seconds), with the CLI's memory and thread settings for a one-off process. Run under /usr/bin/time
for the process's wall time and peak memory.
Usage: decode_numpy.py FILE.anf [OUT.png]"""
import sys
import time

t0 = time.perf_counter()
sys.modules["torch"] = None  # any import of torch fails: what a decode-only install has
from anfcodec.cli import _one_off_memory, _one_off_strip_threads  # noqa: E402

_one_off_strip_threads(None)  # as the CLI's one-off decode, before numpy loads
_one_off_memory()
from anfcodec import container as fmt  # noqa: E402
from anfcodec.decoder.decode import decode, load_model  # noqa: E402

data = open(sys.argv[1], "rb").read()
t1 = time.perf_counter()
header = fmt.unpack(data).header
load_model(header.model_id, header.weights_hash)
t2 = time.perf_counter()
image = decode(data)
t3 = time.perf_counter()
if len(sys.argv) > 2:
    image.save(sys.argv[2])
print(f"{sys.argv[1]}: imports {t1 - t0:.2f} s, weights and program {t2 - t1:.2f} s, decode {t3 - t2:.2f} s, "
      f"total {time.perf_counter() - t0:.2f} s")
