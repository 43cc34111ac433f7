"""The torch-free decoder's networks against the torch decoder's: the same integers, the same pixels."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anfcodec import api, zoo
from anfcodec.decoder.decode import decode as decoder_decode
from anfcodec.decoder import program as prog
from anfcodec.decoder.model import DecoderModel
from anfcodec.decoder.nets import ExactNet, to_grid
from anfcodec.decoder.synthesis import Synthesis

MODELS = ["anfic-ckbd-n64-m256-int8", "anfic-ckbd-n64-m256", "anfic-n128-m256"]


def _arrays(model_id):
    model = zoo.load_model(model_id)
    program, derived = model.decoder_program()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, program, {**state, **derived}


@torch.inference_mode()
def _latent(model, quality, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 9, 1, 4)  # smooth enough to look like an image to the flow
    return model.analyze(x) * model.gain(torch.tensor([quality]))


@pytest.mark.parametrize("model_id", MODELS)
def test_program_round_trips_through_its_file(model_id, tmp_path):
    _, program, arrays = _arrays(model_id)
    derived = {k: v for k, v in arrays.items() if "." in k and not k.endswith((".weight", ".bias"))}
    prog.save(tmp_path / "p.npz", program, derived)
    loaded, back = prog.load(tmp_path / "p.npz")
    assert loaded["synthesis_order"] == program["synthesis_order"]
    assert all(np.array_equal(back[k], derived[k]) for k in derived)


@pytest.mark.parametrize("model_id", MODELS)
def test_a_compiled_program_holds_the_decoders_integers_and_no_float_weights(model_id, tmp_path):
    """Building the decoder from float weights records each weight's integer forms; the program
    stores those instead of the weights, and a decoder built from the file has the same products."""
    _, program, arrays = _arrays(model_id)
    built = DecoderModel.build(program, arrays)
    prog.save(tmp_path / "p.npz", program, prog.compiled_arrays(program, arrays))
    loaded, stored = prog.load(tmp_path / "p.npz")
    weights = {k for k in prog.referenced(program) if k.endswith((".weight", ".gamma"))}
    assert weights and not weights & set(stored)
    assert all(stored[k].dtype.kind == "i" for k in stored if k.endswith(("@grid14", "@grid16", "@int8")))
    again = DecoderModel.build(loaded, stored)
    for a, b in zip(built.h_s.layers, again.h_s.layers):
        assert (a[1] is None) == (b[1] is None) and (a[1] is None or np.array_equal(a[1].matrix, b[1].matrix))
    for name, net in built.synthesis.nets.items():
        mine = [c.product for c in net.convs] if hasattr(net, "convs") else [p for _, p in net.layers if p]
        theirs = [c.product for c in again.synthesis.nets[name].convs] if hasattr(net, "convs") \
            else [p for _, p in again.synthesis.nets[name].layers if p]
        assert all(np.array_equal(u.matrix, v.matrix) and u.fan == v.fan for u, v in zip(mine, theirs, strict=True))


def test_int16_storage_keeps_the_few_larger_integers_exactly(tmp_path):
    v = np.arange(-40000, 40000, 7, dtype=np.int32)[None]
    v[0, ::5] = 12  # most values fit int16, some do not
    v[0, 3] = 2**30
    prog.save(tmp_path / "p.npz", {"arch": "x"}, {"w@grid16": v, "tables.t": v})
    _, back = prog.load(tmp_path / "p.npz")
    assert back["w@grid16"].dtype == np.int32 and np.array_equal(back["w@grid16"], v)
    with np.load(tmp_path / "p.npz") as z:
        assert z["w@grid16"].dtype == np.int16 and z["tables.t"].dtype == np.int32


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("quality", [1.0, 4.5, 8.0])
def test_synthesis_gives_the_torch_decoders_pixels(model_id, quality):
    model, program, arrays = _arrays(model_id)
    y = torch.round(_latent(model, quality)).double()
    want = model.synthesize_exact(y, quality)
    got = Synthesis(program, arrays)(y.numpy(), quality)
    assert np.array_equal(got, want.numpy())


@pytest.mark.parametrize("model_id", MODELS)
def test_hyper_synthesis_gives_the_torch_integers(model_id):
    model, program, arrays = _arrays(model_id)
    g = torch.Generator().manual_seed(1)
    h_hat = torch.randint(-6, 7, (1, model.config.hyper_N, 3, 4), generator=g).float()
    with torch.inference_mode():
        want = model._exact_hyper(h_hat)
    got = ExactNet(prog.lower(program["hyper"], arrays))(to_grid(h_hat.numpy()))
    assert np.array_equal(got, want.numpy())


GOLDEN = Path(__file__).parent / "data"
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['compressai'] = None\n"


def test_golden_files_decode_without_torch_or_weights_files(tmp_path):
    """A process where importing torch fails, with the manifest and the decoder programs installed
    but no weights file (a decode-only install), decodes every golden file to its stored pixels."""
    for f in [zoo.WEIGHTS_DIR / "manifest.json", *zoo.WEIGHTS_DIR.glob("*.decoder.npz")]:
        (tmp_path / f.name).symlink_to(f)
    code = BLOCK_TORCH + (
        "import numpy as np, pathlib\n"
        "from PIL import Image\n"
        "from anfcodec.decoder.decode import decode\n"
        "for f in sorted(pathlib.Path(sys.argv[1]).glob('*.anf')):\n"
        "    got = np.asarray(decode(f.read_bytes()))\n"
        "    assert np.array_equal(got, np.asarray(Image.open(f.with_suffix('.png')))), f.name\n"
        "    print(f.name)\n")
    out = subprocess.run([sys.executable, "-c", code, str(GOLDEN)], capture_output=True, text=True,
                         env={**os.environ, zoo.ENV: str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == len(list(GOLDEN.glob("*.anf"))) > 0


def _photo(width=150, height=100, alpha=False):
    g = np.random.default_rng(3)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    rgb = np.clip(rgb + g.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    if alpha:
        a = ((xx // 10 + yy // 10) % 2 * 255).astype(np.uint8)[..., None]
        return Image.fromarray(np.concatenate([rgb, a], -1), "RGBA")
    return Image.fromarray(rgb, "RGB")


@pytest.mark.parametrize("model_id", sorted(zoo.manifest()["models"]))
@pytest.mark.parametrize("quality", [1.0, 3.5, "top"])
def test_fresh_encodes_decode_to_the_torch_decoders_pixels(model_id, quality):
    quality = zoo.quality_range(model_id)[1] if quality == "top" else quality
    data = api.encode(_photo(), quality=quality, model_id=model_id)
    assert np.array_equal(np.asarray(decoder_decode(data)), np.asarray(api.decode(data)))


def test_tiles_alpha_and_the_near_lossless_layer_without_torch_too():
    data = api.encode(_photo(200, 140, alpha=True), quality=2, tile=64, max_error=2,
                      model_id="anfic-ckbd-n64-m256-int8")
    got, want = decoder_decode(data, strict=True), api.decode(data)
    assert got.mode == want.mode == "RGBA" and np.array_equal(np.asarray(got), np.asarray(want))


def test_a_process_without_torch_loaded_decodes_without_importing_it(tmp_path):
    """``anfcodec.decode`` and ``anfcodec decode`` with torch installed but not imported: the
    torch-free decoder, the stored pixels, and torch never imported (a one-off decode saves its
    import); ``fast`` asks for the torch decoder."""
    f = sorted(GOLDEN.glob("anfic-ckbd-n64-m256-int8-*.anf"))[0]
    code = ("import sys, numpy as np\nfrom PIL import Image\nimport anfcodec\n"
            "want = np.asarray(Image.open(sys.argv[1].replace('.anf', '.png')))\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "assert np.array_equal(np.asarray(anfcodec.decode(data)), want)\n"
            "assert 'torch' not in sys.modules\n"
            "from anfcodec.cli import main\n"
            "try:\n    main(['decode', sys.argv[1], '-o', sys.argv[2], '-f', '--quiet'])\n"
            "except SystemExit as e:\n    assert not e.code\n"
            "assert 'torch' not in sys.modules and np.array_equal(np.asarray(Image.open(sys.argv[2])), want)\n"
            "anfcodec.decode(data, fast=True)\n"
            "assert 'torch' in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code, str(f), str(tmp_path / "x.png")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_package_and_the_pillow_plugin_decode_without_torch(tmp_path):
    f = sorted(GOLDEN.glob("anfic-ckbd-n64-m256-int8-*.anf"))[0]
    code = BLOCK_TORCH + (
        "import numpy as np\n"
        "from PIL import Image\n"
        "import anfcodec, anfcodec.pillow\n"
        "want = np.asarray(Image.open(sys.argv[1].replace('.anf', '.png')))\n"
        "assert np.array_equal(np.asarray(anfcodec.decode(open(sys.argv[1], 'rb').read())), want)\n"
        "assert np.array_equal(np.asarray(Image.open(sys.argv[1]).convert('RGB')), want)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_cli_decodes_every_golden_file_without_torch(tmp_path):
    code = BLOCK_TORCH + "from anfcodec.cli import main\nmain()\n"
    for f in sorted(GOLDEN.glob("*.anf")):
        out = tmp_path / (f.stem + ".png")
        r = subprocess.run([sys.executable, "-c", code, "decode", str(f), "-o", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(f.with_suffix(".png")))), f.name


@pytest.mark.parametrize("how", [["--threads", "2"], ["--jobs", "2"]])
def test_batch_decoding_without_torch_installed(tmp_path, how):
    """torch shadowed on the path by a package that fails to import, so spawned workers lack it too."""
    (tmp_path / "shadow" / "torch").mkdir(parents=True)
    (tmp_path / "shadow" / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    files = sorted(GOLDEN.glob("anfic-ckbd-n64-m256-int8-*.anf"))[:1] + sorted(GOLDEN.glob("anfic-n128-m256-*.anf"))[:1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", "from anfcodec.cli import main; main()", "decode", *map(str, files), "--out-dir", str(tmp_path / "out"),
                        *how], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for f in files:
        got = np.asarray(Image.open(tmp_path / "out" / (f.stem + ".png")))
        assert np.array_equal(got, np.asarray(Image.open(f.with_suffix(".png")))), f.name


def test_a_program_of_another_format_is_refused_clearly(tmp_path):
    text = np.frombuffer(b'{"format": 1, "arch": "anfic"}', dtype=np.uint8)
    np.savez(tmp_path / "p.npz", **{prog.PROGRAM_KEY: text})
    with pytest.raises(prog.ProgramError, match="format 1: this decoder reads 2"):
        prog.load(tmp_path / "p.npz")


def test_a_strips_padded_rows_are_those_of_the_padded_input():
    from anfcodec.decoder.nets import padded_rows
    x = np.arange(2 * 7 * 5 * 3, dtype=np.float64).reshape(2, 7, 5, 3)
    for pad in [(0, 0), (1, 1), (2, 1)]:
        whole = np.pad(x, ((0, 0), pad, pad, (0, 0)))
        for lo in range(-pad[0], 7):
            for hi in range(lo + 1, 7 + pad[1] + 1):
                assert np.array_equal(padded_rows(x, lo, hi, pad), whole[:, lo + pad[0]:hi + pad[0]])


def test_strips_on_threads_decode_the_same_pixels(monkeypatch):
    """Many small strips on three threads, the GDN products nested inside them: every golden file
    still decodes to its stored pixels."""
    from anfcodec.decoder import nets
    monkeypatch.setattr(nets, "STRIP_BYTES", 1 << 16)
    nets.use_strip_threads(3)
    try:
        for f in sorted(GOLDEN.glob("*.anf"))[:4]:
            got = np.asarray(decoder_decode(f.read_bytes()))
            assert np.array_equal(got, np.asarray(Image.open(f.with_suffix(".png")))), f.name
    finally:
        nets.use_strip_threads(1)
    assert nets._strip_pool is None
