"""A wheel that works: built from this tree, installed (not editable) into a fresh venv, used from
another folder, it finds its weights (installed under <prefix>/share/anfcodec/weights) and decodes
every kept file of every release to its stored pixels."""
import os
import site
import subprocess
import sys
import venv


from conftest import ROOT



def test_wheel_installs_and_codes_from_any_folder(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(wheels), "-q"], capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    wheel, = wheels.glob("anfcodec-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, compressai, ...) come from this environment's site-packages, but not
    # its editable anfcodec: a plain path entry does not run the editable install's finder.
    (env_dir / purelib).joinpath("deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ANFCODEC_WEIGHTS", "PYTHONPATH")}
    script = f"""
import pathlib, numpy as np, anfcodec
from PIL import Image
from anfcodec import zoo
assert pathlib.Path(anfcodec.__file__).is_relative_to({str(env_dir)!r}), anfcodec.__file__
assert zoo.WEIGHTS_DIR.is_relative_to({str(env_dir)!r}), zoo.WEIGHTS_DIR
img = Image.open({str(ROOT / "examples" / "sample.png")!r}).convert("RGB").crop((0, 0, 128, 96))
data = anfcodec.encode(img, quality=3)
assert anfcodec.decode(data).size == img.size
for f in sorted(pathlib.Path({str(ROOT / "tests" / "data")!r}).glob("*.anf")):
    got = np.asarray(anfcodec.decode(f.read_bytes()))
    assert np.array_equal(got, np.asarray(Image.open(f.with_suffix(".png")))), f.name
print("ok", zoo.default_model_id())
"""
    r = subprocess.run([py, "-c", script], cwd=work, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]
    cli = subprocess.run([env_dir / "bin" / "anfcodec", "models"], cwd=work, capture_output=True, text=True, env=env)
    assert cli.returncode == 0 and "(default)" in cli.stdout
