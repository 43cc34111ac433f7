"""Outputs never harm what the path names: special files are written into, links are followed,
regular files are replaced atomically (``imageio.write_output``, through the CLI)."""
import os
import stat
import threading

import pytest

from anfcodec import container
from anfcodec.imageio import write_output
from conftest import SAMPLE, run_cli


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    from PIL import Image
    path = tmp_path_factory.mktemp("img") / "s.png"
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 96, 64)).save(path)
    return path


def test_a_character_device_output_stays_a_device(small_png, tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD here")
    for force in ([], ["-f"]):  # writing into a device replaces nothing: -f is not needed
        r = run_cli("encode", small_png, "-o", node, *force)
        assert r.returncode == 0, r.stderr.decode()
        assert stat.S_ISCHR(os.stat(node).st_mode) and os.stat(node).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no temporary left beside it


def test_a_fifo_output_stays_a_fifo_and_its_reader_gets_the_file(small_png, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    r = run_cli("encode", small_png, "-o", fifo, "-q", "2")
    reader.join(timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    c = container.unpack(got[0])
    assert (c.header.width, c.header.height) == (96, 64)


def test_a_symlink_output_writes_its_target_and_stays_a_link(small_png, tmp_path):
    target, link = tmp_path / "real.anf", tmp_path / "link.anf"
    target.write_bytes(b"old")
    link.symlink_to(target)
    r = run_cli("encode", small_png, "-o", link)
    assert r.returncode == 1 and b"exists" in r.stderr  # the target is a regular file: -f needed
    assert run_cli("encode", small_png, "-o", link, "-f").returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert container.unpack(target.read_bytes()).header.width == 96


def test_a_dangling_symlink_output_creates_its_target(tmp_path):
    target, link = tmp_path / "new.bin", tmp_path / "link.bin"
    link.symlink_to(target)
    write_output(link, b"data")
    assert link.is_symlink() and target.read_bytes() == b"data"


def test_a_regular_output_is_replaced_whole(tmp_path):
    out = tmp_path / "x.bin"
    out.write_bytes(b"old")
    write_output(out, b"new")
    assert out.read_bytes() == b"new" and stat.S_ISREG(os.stat(out).st_mode)
