"""MS-ANFIC: the foundation's contract for the multiscale model, split maps and their chunks.

The model here is built from the shipped single-scale weights (``from_single_scale``)
and installed in a temporary weights folder, so these tests do not depend on trained
multiscale weights. Its coarse scale is untrained, so the RD search picks the fine
scale; tests that need coarse regions impose a split map.
"""

import dataclasses
import numpy as np
import pytest
import torch

from anfcodec import api, bitstream, zoo
from anfcodec import container as fmt
from anfcodec.exact import ExactnessError
from anfcodec.imageio import pad_edge
from anfcodec.decoder.decode import decode as decoder_decode
from anfcodec.models import MSANFIC
from conftest import installed_model
from roundtrip import assert_same_symbols, check_round_trip
from test_models import check_inverse

MS_ID = "ms-anfic-test"
BASE_ID = "anfic-ckbd-n128-m256"  # the checkerboard-context release it grows from
SHIPPED_ID = "ms-anfic-ckbd-n128-m256"


@pytest.fixture(scope="module")
def ms_model(tmp_path_factory):
    base = zoo.manifest(zoo.WEIGHTS_DIR)["models"][BASE_ID]  
    ms = MSANFIC.from_single_scale(zoo.load_state_dict_file(zoo.WEIGHTS_DIR / base["file"]), base["config"])
    yield from installed_model(tmp_path_factory, ms, MS_ID)


def _x(img) -> torch.Tensor:
    return pad_edge(torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255, 64)


def _checkerboard(model, x) -> torch.Tensor:
    h, w = x.shape[-2] // 32, x.shape[-1] // 32
    return torch.from_numpy((np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.uint8))


def _file(model, img, quality, split=None) -> tuple[bytes, object]:
    """An .anf file of ``img`` coded with an imposed split map (whole image, no tiles)."""
    x = _x(img)
    sym = model.quantize(model.analyze(x), quality, split)
    h, w = np.asarray(img).shape[:2]
    header = fmt.Header(model.model_id, model.weights_hash, quality, w, h, "RGB", model.pad_multiple)
    return fmt.pack(fmt.Container(header, bitstream.symbols_to_chunks(model, sym))), sym


def test_starts_as_the_single_scale_model(ms_model, sample_image):
    model = zoo.load_model(BASE_ID, "cpu")
    x = _x(sample_image)
    sym = ms_model.compress(x, 4.0, 0)
    assert sym.split.all()  # untrained coarse scale: the RD search keeps every region fine
    assert torch.equal(ms_model.decompress(sym, 4.0), model.decompress(model.compress(x, 4.0, 0), 4.0))
    # Nothing is spent on the unused coarse scale: its chunks are empty.
    data = api.encode(sample_image, quality=4, refine=0, model_id=MS_ID)
    groups = fmt.unpack(data).streams()[0]
    assert groups[b"CHYP"] == b"" and groups[b"CLAT"] == b""
    single = api.encode(sample_image, quality=4, refine=0, model_id=BASE_ID)
    assert len(data) - len(single) < 80  # the split map and three chunk frames
    assert np.array_equal(np.asarray(api.decode(data)), np.asarray(api.decode(single)))


@pytest.fixture(params=["grown", "shipped"])
def any_ms(request, ms_model):
    """The grown model (untrained coarse scale) and the shipped release (trained coarse scale)."""
    return ms_model if request.param == "grown" else zoo.load_model(SHIPPED_ID, "cpu")


def test_flow_is_invertible_with_quantization_bypassed(any_ms, sample_image):
    assert check_inverse(any_ms, _x(sample_image)) < 1e-3


@pytest.mark.parametrize("quality", [1.0, 4.0, 10.0])
def test_round_trip_contract(any_ms, small_image, quality):
    r = check_round_trip(any_ms, small_image, quality, refine=0)
    assert r["psnr"] > 20


@pytest.mark.parametrize("quality", [1.0, 4.0, 10.0])
def test_exact_round_trip_with_both_scales(any_ms, ms_model, sample_image, quality):
    if any_ms is not ms_model and quality == 1.0:
        quality = 2.0  # imposed at q1, the shipped coarse scale leaves the exact range (test below)
    ms_model = any_ms
    x = _x(sample_image)
    split = _checkerboard(ms_model, x)
    data, enc = _file(ms_model, sample_image, quality, split)
    c = fmt.unpack(data)
    assert [t for t, _ in c.chunks] == [b"SPLT", b"CHYP", b"CLAT", b"HLAT", b"LATN"]
    h, w = np.asarray(sample_image).shape[:2]
    dec = api.chunks_to_symbols(ms_model, c.streams()[0], w, h)
    assert_same_symbols(enc, dec)
    assert torch.equal(dec.split, split)
    assert enc.coarse.latent[:, split.bool()].abs().sum() == 0  # masked positions carry nothing
    assert enc.fine.latent[:, ~ms_model._up(split[None, None].float())[0, 0].bool()].abs().sum() == 0
    # The file decodes to the model's own exact reconstruction.
    out = np.asarray(api.decode(data))
    ref = (ms_model.decompress(enc, quality)[0, :, :h, :w] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(out, ref)
    # Its size is the estimated rate of what it codes (within 3%, or 200 bytes of chunk overhead).
    est = sum(float((-torch.log2(v)).sum()) for v in ms_model.likelihoods(enc).values()) / 8
    coded = c.streams()[0]
    payload = len(coded[b"HLAT"]) + len(coded[b"CHYP"]) + sum(len(fmt.unpack_latent(coded[t])[2])
                                                              for t in (b"LATN", b"CLAT"))
    assert abs(payload - est) <= max(0.03 * est, 200), (payload, est)
    info = fmt.describe(data)["scales"]
    assert info["fine"]["share"] == pytest.approx(float(split.float().mean()))


def test_the_encoder_codes_all_fine_rather_than_write_an_undecodable_map(monkeypatch, sample_image):
    # The shipped release with a checkerboard map imposed at q1: the exact synthesis refuses it. The
    # encoder, offered that map by its own decision, must fall back to all-fine and decode.
    model = zoo.load_model(SHIPPED_ID, "cpu")
    x = _x(sample_image)
    split = _checkerboard(model, x)[None, None].float()
    z2 = model.analyze(x)
    with pytest.raises(ExactnessError):
        model.decompress(model.quantize(z2, 1.0, split[0, 0]), 1.0)
    monkeypatch.setattr(model, "choose_split", lambda *a: split)
    sym = model.quantize(z2, 1.0, image=x)
    assert sym.split.all()
    model.decompress(sym, 1.0)


def _repack(data: bytes, change) -> bytes:
    c = fmt.unpack(data)
    return fmt.pack(fmt.Container(c.header, change(c.chunks)))


@pytest.mark.parametrize("decode", [api.decode, lambda data: decoder_decode(data, strict=True)],
                         ids=["torch", "torch-free"])
def test_damaged_split_map_and_scale_chunks_are_clean_errors(ms_model, sample_image, decode):
    data, _ = _file(ms_model, sample_image, 4.0, _checkerboard(ms_model, _x(sample_image)))
    c = fmt.unpack(data)
    # Bytes flipped on disk: the chunk CRC names the chunk.
    for ctype in (b"SPLT", b"CLAT", b"CHYP"):
        pos = data.index(ctype) + 10
        bad = data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1:]
        with pytest.raises(fmt.FormatError, match=f"CRC mismatch in {ctype.decode()}"):
            decode(bad)
    # A forged split map with a valid chunk CRC: the map's own CRC catches it.
    def forge_split(chunks):
        out = []
        for t, p in chunks:
            if t == b"SPLT":
                region, crc, coded = fmt.unpack_split(p)
                p = fmt.pack_split(region, crc, coded[:2] + bytes(b ^ 0xFF for b in coded[2:]))
            out.append((t, p))
        return out
    with pytest.raises(api.DecodeError, match="SPLT"):
        decode(_repack(data, forge_split))
    # A missing scale chunk, and a coarse-scale stream cut short.
    with pytest.raises(api.DecodeError, match="missing CLAT"):
        decode(_repack(data, lambda ch: [(t, p) for t, p in ch if t != b"CLAT"]))
    # A stream cut short behind a valid CRC: a clean error or an image of the declared size, never a crash
    # (docs/FORMAT.md; a range decoder may read the missing words as zeros).
    cut = _repack(data, lambda ch: [(t, p[:12] if t == b"CLAT" else p) for t, p in ch])
    try:
        assert decode(cut).size == sample_image.size
    except (api.DecodeError, fmt.FormatError):
        pass
    assert c.header.model_id == MS_ID


def test_info_reports_bits_and_area_per_scale(ms_model, sample_image):
    data, sym = _file(ms_model, sample_image, 4.0, _checkerboard(ms_model, _x(sample_image)))
    scales = fmt.describe(data)["scales"]
    c = fmt.unpack(data).streams()[0]
    assert scales["coarse"]["bytes"] == len(c[b"CHYP"]) + len(c[b"CLAT"])
    assert scales["fine"]["bytes"] == len(c[b"HLAT"]) + len(c[b"LATN"])
    assert scales["fine"]["share"] + scales["coarse"]["share"] == pytest.approx(1.0)
    assert scales["regions"] == sym.split.numel()


def test_info_prints_scales_and_draws_the_split_map(ms_model, sample_image, tmp_path):
    from click.testing import CliRunner
    from PIL import Image
    from anfcodec.cli import main
    data, sym = _file(ms_model, sample_image, 4.0, _checkerboard(ms_model, _x(sample_image)))
    anf = tmp_path / "x.anf"
    anf.write_bytes(data)
    r = CliRunner().invoke(main, ["info", str(anf), "--split-map", str(tmp_path / "split.png")])
    assert r.exit_code == 0, r.output
    assert "coarse (1/32)  50.0% of the area" in r.output
    drawn = np.asarray(Image.open(tmp_path / "split.png")).astype(int)
    assert drawn.shape == np.asarray(sample_image).shape
    # The checkerboard's region (0, 0) is coarse (tinted blue), region (0, 1) fine (tinted orange).
    tint = drawn - np.asarray(api.decode(data)).astype(int)
    coarse, fine = tint[8:24, 8:24].mean((0, 1)), tint[8:24, 40:56].mean((0, 1))
    assert coarse[2] > 0 > coarse[0] and fine[0] > 0 > fine[2]
    single = tmp_path / "single.anf"
    single.write_bytes(api.encode(sample_image, quality=2))
    r = CliRunner().invoke(main, ["info", str(single), "--split-map", str(tmp_path / "s.png")])
    assert r.exit_code != 0 and "single-scale" in r.output


def test_split_chunk_parses_as_docs_format_says(ms_model, sample_image):
    # Written from docs/FORMAT.md "SPLT", not from the module's code.
    import struct
    import zlib
    import constriction
    split = _checkerboard(ms_model, _x(sample_image))
    data, _ = _file(ms_model, sample_image, 4.0, split)
    payload = dict(fmt.unpack(data).chunks)[b"SPLT"]
    region, map_crc, p_fine = struct.unpack(">HIH", payload[:8])
    words = np.frombuffer(payload[8:], dtype="<u4").astype(np.uint32)
    pmf = np.array([65536 - p_fine, p_fine], dtype=np.float64)
    model = constriction.stream.model.Categorical(pmf, perfect=False)
    decoded = constriction.stream.queue.RangeDecoder(words).decode(model, split.numel()).reshape(split.shape)
    assert region == 32 and np.array_equal(decoded, split.numpy())
    assert map_crc == zlib.crc32(decoded.astype(np.uint8).tobytes())


def _aux_gradients(ms_model, **config):
    model = MSANFIC(dataclasses.replace(ms_model.config, **config))
    model.load_state_dict(ms_model.state_dict())
    model.train()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    out = model(x, torch.tensor([2.0, 6.0]))
    out["aux_loss"].sum().backward()
    return model


def test_the_auxiliary_coarse_term_sends_no_gradient_to_the_gains_or_the_post_filter(ms_model):
    model = _aux_gradients(ms_model)
    for name, p in (("log_gain", model.log_gain), ("post-filter strength", model.post_filter.strength)):
        assert p.grad is None or not p.grad.any(), name
    assert any(p.grad is not None and p.grad.any() for p in model.h_s_c.parameters())  # the term does train


def test_the_fix_a_ablation_restores_a_push_of_every_gain_towards_finer_steps(ms_model):
    # The pre-fix term: its only gradient to log_gain is -2 * aux_err * weight, so every used gain grows.
    grad = _aux_gradients(ms_model, aux_gain_gradient=True).log_gain.grad
    used = grad[[1, 5]]  # the two qualities the batch trained (q2 and q6, zero-based rows)
    assert (used <= 0).all() and (used < 0).any()
    assert not grad[[0, 2, 3, 4, 6, 7, 8, 9]].any()


def test_the_fix_d_ablation_keeps_the_coarse_scale_linear(ms_model):
    config = dataclasses.replace(ms_model.config, split_branches=False, coarse_explore=0.5)
    model = MSANFIC(config)  # a fresh model: its branches start at zero, as growing starts them
    model.train()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    out = model(x, torch.tensor([2.0, 6.0]))
    (out["aux_loss"].sum() + out["x_hat"].square().mean()).backward()
    for up_or_down in (model.split_down, model.split_up):
        assert all(not p.grad.any() for p in up_or_down.branch.parameters())
        assert not up_or_down.branch[-1].weight.any()
        assert up_or_down.linear.weight.grad.any()  # the projection itself trains


def test_exploration_marks_the_regions_nearest_to_being_cheaper_coarse():
    from anfcodec.models.msanfic import nearest_to_coarse
    ratio = torch.tensor([[[[3.0, 1.1], [9.0, 1.5]]], [[[1.0, 2.0], [0.5, 4.0]]]])
    marked = nearest_to_coarse(ratio, 0.5)
    assert marked.tolist() == [[[[0.0, 1.0], [0.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]]
    assert not nearest_to_coarse(ratio, 0.0).any()


@pytest.mark.parametrize("explore", [0.0, 0.25])
def test_only_explored_coarse_regions_let_the_coarse_path_train_the_flow(ms_model, sample_image, explore):
    # On a photograph the untrained coarse scale is never cheaper, so without exploration every
    # region is fine and the coarse path sends the flow no gradient; explored regions do.
    config = type(ms_model.config).from_dict({**ms_model.config.to_dict(), "coarse_explore": explore})
    model = MSANFIC(config)
    model.load_state_dict(ms_model.state_dict())
    model.train()
    x = _x(sample_image)[..., :128, :128]
    out = model(x.repeat(2, 1, 1, 1), torch.tensor([2.0, 6.0]))
    assert out["split"].mean().item() == pytest.approx(1.0 - explore)
    out["x_hat"].square().mean().backward()  # a distortion term alone: v reaches it only in coarse regions
    grads = [p.grad for p in model.split_down.parameters()]
    assert any(g is not None and g.any() for g in grads) == (explore > 0)


@torch.no_grad()
def test_a_split_map_is_kept_only_when_the_whole_image_costs_less_than_all_fine(ms_model, sample_image, monkeypatch):
    x = _x(sample_image)
    q = 4.0
    y = ms_model.analyze(x) * ms_model.gain(torch.tensor([q]))
    y_c = ms_model.split_down(y)
    # The per-region costs pick the coarse scale in every other region: the whole-image comparison,
    # on the coded bits and the decoded pixels, decides between that map and all-fine.
    split = _checkerboard(ms_model, x)[None, None].float()
    monkeypatch.setattr(ms_model, "region_costs", lambda *a: (split * 0 + 1 - split, split * 0 + 0.5))
    costs = [ms_model.coded_cost(ms_model._symbols(y, y_c, s), x, q) for s in (torch.ones_like(split), split)]
    chosen = ms_model.choose_split(y, y_c, q, image=x)
    assert torch.equal(chosen, split if costs[1] < costs[0] else torch.ones_like(split))
    # The untrained coarse scale costs more: all-fine it is, with nothing spent on the coarse scale.
    assert costs[1] > costs[0] and chosen.all()


@torch.no_grad()
def test_encoders_judge_the_split_against_the_input_image(ms_model, sample_image, monkeypatch):
    # Against the decoder's image of the unquantized latent, coarse regions look cheaper than the
    # file turns out (bench/ms_split_decision.py): compress and rate control pass the input itself.
    seen = []
    choose = ms_model.choose_split
    monkeypatch.setattr(ms_model, "choose_split", lambda y, y_c, q, image=None: seen.append(image) or choose(y, y_c, q, image))
    x = _x(sample_image)
    ms_model.compress(x, 4.0)
    api.encode_to_target(sample_image, target_bpp=0.5, model_id=MS_ID)
    assert len(seen) >= 2 and torch.equal(seen[0], x)
    assert all(im is not None and im.shape == x.shape for im in seen)


@torch.no_grad()
def test_region_costs_charge_bits_and_pixel_error_per_region(ms_model, sample_image):
    x = _x(sample_image)
    qt = torch.tensor([4.0])
    gain, lmbda = ms_model.gain(qt), ms_model.lmbda(qt)
    y = ms_model.analyze(x) * gain
    y_c = ms_model.split_down(y)
    cost_f, cost_c = ms_model.region_costs(x, y, y_c, gain, lmbda, qt)
    assert cost_f.shape == cost_c.shape == (1, 1, x.shape[-2] // 32, x.shape[-1] // 32)
    # Fine coding everywhere: the regions' costs add up to about the whole image's bits plus lambda * SSE.
    fine = torch.ones(1, 1, *cost_f.shape[-2:])
    whole = ms_model.coded_cost(ms_model._symbols(y, y_c, fine), x, 4.0)
    assert float(cost_f.sum()) == pytest.approx(whole, rel=0.1)


@pytest.mark.parametrize("quality", [1.0, 4.0, 8.0])
def test_the_torch_free_decoder_decodes_both_scales_to_the_torch_decoders_pixels(ms_model, sample_image, quality):
    x = _x(sample_image)
    for split in (_checkerboard(ms_model, x), None):  # both scales, then the encoder's own map (all fine)
        data, _ = _file(ms_model, sample_image, quality, split)
        got = decoder_decode(data, strict=True)
        assert np.array_equal(np.asarray(got), np.asarray(api.decode(data)))


def test_anfcodec_decode_takes_ms_files_without_torch(ms_model, sample_image, tmp_path):
    # A process where importing torch fails decodes a file with both scales to the torch decoder's pixels.
    import os
    import subprocess
    import sys
    data, _ = _file(ms_model, sample_image, 4.0, _checkerboard(ms_model, _x(sample_image)))
    (tmp_path / "ms.anf").write_bytes(data)
    np.save(tmp_path / "want.npy", np.asarray(api.decode(data)))
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, anfcodec\n"
            "got = np.asarray(anfcodec.decode(open(sys.argv[1], 'rb').read()))\n"
            "assert np.array_equal(got, np.load(sys.argv[2]))\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ms.anf"), str(tmp_path / "want.npy")],
                         capture_output=True, text=True, env={**os.environ, zoo.ENV: str(zoo.WEIGHTS_DIR)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
