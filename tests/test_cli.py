"""CLI behaviour a user relies on: exit codes, messages, no clobbering, stdin/stdout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE, run_cli


@pytest.fixture(scope="module")
def anf(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sample.anf"
    r = run_cli("encode", SAMPLE, "-o", out, "--quality", "3")
    assert r.returncode == 0, r.stderr
    return out


def test_encode_decode_info(anf, tmp_path):
    png = tmp_path / "rec.png"
    r = run_cli("decode", anf, "-o", png)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    assert Image.open(png).size == Image.open(SAMPLE).size
    r = run_cli("info", anf, "--json")
    d = json.loads(r.stdout)
    assert d["quality"] == 3 and d["file_bytes"] == anf.stat().st_size
    r = run_cli("info", anf)
    assert b"LATN" in r.stdout and b"HLAT" in r.stdout


def test_fast_decode_within_one_level_of_the_exact_one(anf, tmp_path):
    import numpy as np
    from PIL import Image
    assert run_cli("decode", anf, "-o", tmp_path / "exact.png").returncode == 0
    r = run_cli("decode", anf, "-o", tmp_path / "fast.png", "--fast")
    assert r.returncode == 0, r.stderr
    exact, fast = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("exact.png", "fast.png"))
    assert np.abs(exact - fast).max() <= 1


def test_stdin_stdout(anf):
    r = run_cli("decode", "-", "-o", "-", stdin=anf.read_bytes())
    assert r.returncode == 0 and r.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli("encode", "-", "-o", "-", "-q", "1", stdin=r.stdout)
    assert r.returncode == 0 and r.stdout[:4] == b"\x89ANF"


def test_no_clobber_without_force(anf, tmp_path):
    out = tmp_path / "x.png"
    out.write_bytes(b"precious")
    r = run_cli("decode", anf, "-o", out)
    assert r.returncode == 1 and b"exists" in r.stderr
    assert out.read_bytes() == b"precious"
    assert run_cli("decode", anf, "-o", out, "-f").returncode == 0
    assert out.read_bytes() != b"precious"


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(SAMPLE.read_bytes())
    r = run_cli("encode", src, "-o", src, "-f")
    assert r.returncode == 2
    assert src.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x89ANF\r\n\x1a\n\x00\x01", b"\x89ANF\r\n\x1a\n\x00\x09"])
def test_bad_anf_input_exit_1(tmp_path, content):
    bad = tmp_path / "bad.anf"
    bad.write_bytes(content)
    for args in (("decode", bad, "-o", tmp_path / "o.png"), ("info", bad)):
        r = run_cli(*args)
        assert r.returncode == 1, r.stderr
        assert b"Traceback" not in r.stderr and r.stderr.strip().count(b"\n") == 0
    assert not (tmp_path / "o.png").exists()


def test_corrupted_and_truncated(anf, tmp_path):
    data = anf.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    for i, content in enumerate([bytes(flipped), data[: len(data) // 2], data[:-1]]):
        bad = tmp_path / f"bad{i}.anf"
        bad.write_bytes(content)
        r = run_cli("decode", bad, "-o", tmp_path / f"o{i}.png")
        assert r.returncode == 1 and b"Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / f"o{i}.png").exists()


def test_non_image_input_to_encode(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    r = run_cli("encode", bad, "-o", tmp_path / "o.anf")
    assert r.returncode == 1 and b"image" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "o.anf").exists()


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("encode", "-").returncode == 2                         # stdin needs -o
    assert run_cli("encode", SAMPLE, "-o", tmp_path / "a.anf", "-q", "11").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_quality_range_is_the_models(tmp_path):
    from anfcodec.zoo import quality_range
    top = quality_range()[1]
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "a.anf", "-q", f"{top + 0.5:g}")
    assert r.returncode == 2 and f"highest quality of the default model: qualities run from 1 to {top:g}".encode() in r.stderr
    assert not (tmp_path / "a.anf").exists()
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "a.anf", "-q", "9", "--model", "anfic-ckbd-n64-m256")
    assert r.returncode == 2 and b"highest quality of anfic-ckbd-n64-m256: qualities run from 1 to 8" in r.stderr
    for quality in (["-q", "3"], []):
        r = run_cli("encode", SAMPLE, "-o", tmp_path / "a.anf", *quality, "--model", "no-such-model")
        assert r.returncode == 2 and b"not installed" in r.stderr


def test_missing_input_file(tmp_path):
    r = run_cli("encode", tmp_path / "nope.png", "-o", tmp_path / "a.anf")
    assert r.returncode == 1 and b"cannot read" in r.stderr


def test_info_without_torch(anf):
    # Block torch (and numpy) imports entirely: info must still work.
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None; "
            "from anfcodec.cli import main; main(['info', '--json', sys.argv[1]])")
    import subprocess
    r = subprocess.run([sys.executable, "-c", code, str(anf)], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chunks"]


def test_decompression_bomb_header_refused(anf, tmp_path):
    from anfcodec import container as fmt
    c = fmt.unpack(anf.read_bytes())
    c.header.width = c.header.height = 100_000
    bomb = tmp_path / "bomb.anf"
    bomb.write_bytes(fmt.pack(c))
    r = run_cli("decode", bomb, "-o", tmp_path / "o.png")
    assert r.returncode == 1 and b"limit" in r.stderr
    r = run_cli("decode", anf, "-o", tmp_path / "o.png", "--max-pixels", "1000")
    assert r.returncode == 1 and b"limit" in r.stderr


def test_encoder_refuses_oversized_input(tmp_path):
    import struct, zlib
    # A PNG whose header declares 30000 x 30000 pixels (900 MP) but carries no pixel data.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    def chunk(t, p):
        return struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    src = tmp_path / "huge.png"
    src.write_bytes(png)
    r = run_cli("encode", src, "-o", tmp_path / "o.anf")
    assert r.returncode == 1 and b"--max-pixels" in r.stderr
    assert not (tmp_path / "o.anf").exists()


def test_wrong_weights_named_in_error(anf, tmp_path):
    from anfcodec import container as fmt
    c = fmt.unpack(anf.read_bytes())
    c.header.weights_hash = bytes.fromhex("0123456789abcdef")
    other = tmp_path / "other.anf"
    other.write_bytes(fmt.pack(c))
    r = run_cli("decode", other, "-o", tmp_path / "o.png")
    assert r.returncode == 1
    assert b"0123456789abcdef" in r.stderr and c.header.model_id.encode() in r.stderr
    c.header.model_id = "anfic-from-the-future"
    other.write_bytes(fmt.pack(c))
    r = run_cli("decode", other, "-o", tmp_path / "o.png")
    assert r.returncode == 1 and b"anfic-from-the-future" in r.stderr


def test_tile_option(tmp_path):
    out = tmp_path / "tiled.anf"
    r = run_cli("encode", SAMPLE, "-o", out, "-q", "2", "--tile", "128")
    assert r.returncode == 0, r.stderr
    assert json.loads(run_cli("info", out, "--json").stdout)["tiles"]["count"] > 1
    assert b"tile" not in r.stderr  # the tile progress bar shows on a terminal only
    r = run_cli("decode", out, "-o", tmp_path / "tiled.png")
    assert r.returncode == 0 and b"tile" not in r.stderr
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "bad.anf", "--tile", "100")
    assert r.returncode == 2 and b"multiple of 64" in r.stderr


def test_models_lists_every_installed_model_and_the_default_without_torch():
    from anfcodec.zoo import manifest
    code = ("import sys; sys.modules['torch'] = None; "
            "from anfcodec.cli import main; main(['models'])")
    import subprocess
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    man = manifest()
    for model_id, entry in man["models"].items():
        assert model_id in r.stdout and f"qualities 1..{len(entry['config']['lambdas'])}" in r.stdout
    assert f"{man['default']}  (default)" in r.stdout
    listed = json.loads(run_cli("models", "--json").stdout)
    assert listed.keys() == man["models"].keys()


def test_export_takes_a_checkpoint_or_an_installed_model_and_names_the_new_one(tmp_path):
    for args, says in (([], "CHECKPOINT or --from-model"),
                       (["--from-model", "anfic-ckbd-n64-m256"], "needs --model-id")):
        r = run_cli("export", *args, "--weights-dir", tmp_path)
        assert r.returncode == 2 and says in r.stderr.decode(), r.stderr.decode()
    assert not list(tmp_path.iterdir())  # nothing written


def test_help_gives_the_default_models_quality_range():
    from anfcodec.zoo import quality_range
    r = run_cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.decode().split())
    assert f"({quality_range()[1]:g} for the default model" in text and "to 8 (best" not in text


def test_a_quality_in_percent_points_to_the_range_and_to_size_targets(tmp_path):
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "a.anf", "-q", "75")
    assert r.returncode == 2 and b"not a 0-100 scale" in r.stderr and b"--target-bpp" in r.stderr


def test_without_o_the_output_goes_beside_the_input_and_never_over_a_file(anf, tmp_path):
    import shutil
    src = tmp_path / "photo.png"
    shutil.copy(SAMPLE, src)
    assert run_cli("encode", src, "-q", "1").returncode == 0
    assert (tmp_path / "photo.anf").is_file()
    r = run_cli("decode", tmp_path / "photo.anf")      # photo.png, the original, is there
    assert r.returncode == 1 and b"never replaces" in r.stderr
    assert src.read_bytes() == SAMPLE.read_bytes()
    (tmp_path / "photo.anf").rename(tmp_path / "other.anf")
    assert run_cli("decode", tmp_path / "other.anf").returncode == 0 and (tmp_path / "other.png").is_file()


def test_decode_test_checks_every_file_and_writes_nothing(anf, tmp_path):
    bad = tmp_path / "bad.anf"
    bad.write_bytes(anf.read_bytes()[:-40])
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("decode", "--test", anf)
    assert r.returncode == 0 and r.stderr == b""
    r = run_cli("decode", "-t", "-v", anf, bad)
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert lines[0].startswith(f"{anf}: OK") and lines[1].startswith(f"{bad}: FAILED")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert run_cli("decode", "--test", anf, "-o", tmp_path / "x.png").returncode == 2


def test_verbose_gives_one_line_per_file_and_quiet_none(anf, tmp_path):
    from anfcodec.container import unpack
    out = tmp_path / "v.anf"
    r = run_cli("encode", SAMPLE, "-o", out, "-q", "2", "-v", "--print-psnr")
    assert r.returncode == 0
    line, = r.stderr.decode().splitlines()
    size = out.stat().st_size
    h = unpack(out.read_bytes()).header
    assert f"{size} bytes, {8 * size / (h.width * h.height):.4f} bpp, quality 2," in line
    assert line.endswith(" dB") and "PSNR" in line
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "t.anf", "--target-bpp", "0.3", "--quiet")
    assert r.returncode == 0 and r.stderr == b""                         # no "reached ..." report
    r = run_cli("encode", SAMPLE, "-o", tmp_path / "t2.anf", "--target-bpp", "0.3")
    assert b"reached" in r.stderr


def test_version_short_flag():
    from anfcodec import __version__
    r = run_cli("-V")
    assert r.returncode == 0 and __version__ in r.stdout.decode()


def test_binary_output_to_a_terminal_is_refused_without_force(anf):
    import os
    import pty
    import subprocess
    main, tty = pty.openpty()
    try:
        for args, code in ((["decode", anf, "-o", "-"], 2), (["encode", SAMPLE, "-o", "-", "-q", "1"], 2),
                           (["encode", SAMPLE, "-o", "-", "-q", "1", "-f"], 0)):
            r = subprocess.run([sys.executable, "-m", "anfcodec.cli", *map(str, args)], stdout=tty,
                               stderr=subprocess.PIPE, timeout=300)
            assert r.returncode == code, r.stderr
            if code:
                assert b"terminal" in r.stderr
            while code == 0 and os.read(main, 1 << 16).__len__() == 1 << 16:  # drain what -f wrote
                pass
    finally:
        os.close(main)
        os.close(tty)


def test_threads_sets_torchs_intra_op_threads(monkeypatch, tmp_path):
    import torch
    from click.testing import CliRunner

    from anfcodec import cli
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    r = CliRunner().invoke(cli.main, ["encode", str(SAMPLE), "-o", str(tmp_path / "a.anf"), "-q", "1",
                                      "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert calls == [1]


def test_a_one_off_command_tunes_memory_for_its_own_process_and_the_library_does_not():
    code = ("import sys, numpy as np; sys.modules['torch'] = None; get = np.core.multiarray._get_madvise_hugepage; "
            "default = get(); import anfcodec, anfcodec.decoder.decode; library = get(); "
            "from anfcodec import cli; cli._one_off_memory(); print(library == default, get())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]  # the library leaves numpy's huge pages alone; the CLI turns them off


@pytest.mark.parametrize("preset, numpy_first, expected", [
    ({}, False, ["1", "2"]),                                 # BLAS pinned to one thread, strips on --threads
    ({"OPENBLAS_NUM_THREADS": "4"}, False, ["4", "1"]),      # the user's BLAS threads win: no strip threads
    ({}, True, ["None", "1"]),                               # numpy already loaded: too late, nothing changes
])
def test_a_one_off_decode_runs_strips_on_threads_only_where_blas_is_single_threaded(preset, numpy_first, expected):
    code = (("import numpy\n" if numpy_first else "") +
            "import os, sys; sys.modules['torch'] = None\nfrom anfcodec import cli\ncli._one_off_strip_threads(2)\n"
            "from anfcodec.decoder import nets\nprint(os.environ.get('OPENBLAS_NUM_THREADS'), nets._strip_threads)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, **preset}).stdout.split()
    assert out == expected


def test_threads_leave_torch_unimported_where_the_torch_free_decoder_decodes(tmp_path):
    anf = sorted((Path(__file__).parent / "data").glob("anfic-ckbd-n64-m256-int8-*.anf"))[0]
    code = ("import sys\nfrom anfcodec.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, "decode", str(anf), "-o", str(tmp_path / "a.png"), "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]
