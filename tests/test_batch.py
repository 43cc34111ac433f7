"""Batch mode: folders and several inputs, parallel workers, failures reported without stopping."""
import pytest

from anfcodec import batch
from conftest import run_cli, synthetic_image


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    synthetic_image(96, 64, seed=1).save(d / "a.png")
    synthetic_image(80, 48, seed=2).save(d / "b.jpg")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "notes.txt").write_text("not an image, and not picked up from a folder")
    return d


def test_folder_with_two_jobs_carries_on_past_a_corrupt_file(folder, tmp_path):
    out = tmp_path / "anf"
    r = run_cli("encode", folder, "--out-dir", out, "--jobs", "2", "-q", "2")
    assert r.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.anf", "b.anf"]
    assert b"encoded 2 of 3 files; 1 failed" in r.stderr and b"FAILED" in r.stderr and b"broken.png" in r.stderr
    dec = tmp_path / "dec"
    r = run_cli("decode", out, "--out-dir", dec, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dec.iterdir()) == ["a.png", "b.png"]
    assert b"decoded 2 of 2 files; 0 failed" in r.stderr


def test_existing_outputs_are_kept_without_force(folder, tmp_path):
    out = tmp_path / "anf"
    out.mkdir()
    (out / "a.anf").write_bytes(b"precious")
    r = run_cli("encode", folder / "a.png", folder / "b.jpg", "--out-dir", out)
    assert r.returncode == 1 and b"exists" in r.stderr
    assert (out / "a.anf").read_bytes() == b"precious" and (out / "b.anf").exists()


def test_colliding_output_names_are_failures(tmp_path):
    pairs = batch.plan([tmp_path / "x.png", tmp_path / "x.jpg"], tmp_path, ".anf")
    synthetic_image(32, 32).save(tmp_path / "x.png")
    synthetic_image(32, 32).save(tmp_path / "x.jpg")
    results = batch.run("encode", pairs, {"quality": 1}, jobs=1)
    assert results[0].ok and not results[1].ok and "collides" in results[1].error


def test_usage_errors(folder, tmp_path):
    assert run_cli("encode", folder / "a.png", folder / "b.jpg", "-o", tmp_path / "x.anf").returncode == 2
    assert run_cli("encode", folder).returncode == 2            # a folder needs --out-dir


def test_batch_progress_only_on_a_terminal_and_verbose_lines_per_file(folder, tmp_path):
    r = run_cli("encode", folder, "--out-dir", tmp_path / "anf", "-q", "1", "-v")
    err = r.stderr.decode()
    assert "file/s" not in err and "%|" not in err          # stderr is a pipe here: no bar
    lines = [x for x in err.splitlines() if " -> " in x or "FAILED" in x]
    assert len([x for x in lines if " bytes, " in x and " bpp, quality 1, " in x]) == 2
    assert any(x.startswith(str(folder / "broken.png")) and "FAILED" in x for x in lines)
    r = run_cli("decode", tmp_path / "anf", "--out-dir", tmp_path / "dec", "--quiet")
    assert r.returncode == 0 and r.stderr == b""


def test_a_record_per_file_never_raises(folder, tmp_path):
    ok = batch.process("encode", folder / "a.png", tmp_path / "a.anf", {"quality": 1}, False)
    bad = batch.process("encode", folder / "broken.png", tmp_path / "x.anf", {"quality": 1}, False)
    assert ok.ok and ok.bytes == (tmp_path / "a.anf").stat().st_size and ok.bpp == 8 * ok.bytes / (96 * 64)
    assert ok.seconds > 0 and not bad.ok and bad.error and not (tmp_path / "x.anf").exists()


def test_bpp_is_the_anf_files_whatever_the_output_is_named(folder, tmp_path):
    r = batch.process("encode", folder / "a.png", tmp_path / "a.bin", {"quality": 1}, False)
    assert r.ok and r.bpp == 8 * (tmp_path / "a.bin").stat().st_size / (96 * 64)
    d = batch.process("decode", tmp_path / "a.bin", tmp_path / "a.png", {}, False)
    assert d.ok and d.bpp == r.bpp
