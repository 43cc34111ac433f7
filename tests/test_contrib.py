"""The libmagic and shared-mime-info entries in contrib/ recognise .anf files."""
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from anfcodec import api, container
from conftest import ROOT, synthetic_image

MAGIC = ROOT / "contrib" / "anfcodec.magic"
MIME = ROOT / "contrib" / "anfcodec-mime.xml"


@pytest.fixture(scope="module")
def anf(tmp_path_factory):
    path = tmp_path_factory.mktemp("contrib") / "x.anf"
    path.write_bytes(api.encode(synthetic_image(112, 80, seed=4), quality=1))
    return path


@pytest.mark.skipif(shutil.which("file") is None, reason="file(1) not installed")
def test_file_names_the_format_version_size_and_mime_type(anf, tmp_path):
    h = container.unpack(anf.read_bytes()).header
    out = subprocess.run(["file", "-m", MAGIC, anf], capture_output=True, text=True, check=True).stdout
    assert f"anfcodec learned image, format version 1, {h.width}x{h.height}, model {h.model_id}" in out
    mime = subprocess.run(["file", "-b", "--mime-type", "-m", MAGIC, anf], capture_output=True, text=True).stdout
    assert mime.strip() == "image/x-anf"
    other = tmp_path / "not.anf"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    assert "anfcodec" not in subprocess.run(["file", "-m", MAGIC, other], capture_output=True, text=True).stdout


def test_mime_xml_has_the_glob_and_the_signature():
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    t = ET.parse(MIME).getroot().find("m:mime-type", ns)
    assert t.get("type") == "image/x-anf"
    assert t.find("m:glob", ns).get("pattern") == "*.anf"
    match = t.find("m:magic/m:match", ns)
    value = match.get("value").encode().decode("unicode_escape").encode("latin-1")
    assert match.get("offset") == "0" and value == container.SIGNATURE


@pytest.mark.skipif(shutil.which("update-mime-database") is None, reason="shared-mime-info not installed")
def test_update_mime_database_installs_it(tmp_path):
    (tmp_path / "packages").mkdir()
    shutil.copy(MIME, tmp_path / "packages")
    subprocess.run(["update-mime-database", tmp_path], check=True, capture_output=True)
    assert "image/x-anf:*.anf" in (tmp_path / "globs2").read_text()
    assert b"image/x-anf" in (tmp_path / "magic").read_bytes()
