"""A non-editable install ships every bundled model with its SAEs.

The wheel is built from a copy of the source tree, installed with `pip install --target` into an
empty folder, and used from a subprocess whose import path holds only that folder and the
environment's third-party packages (`python -S`: no .pth files, so the editable install of the
checkout cannot shadow it), run from an empty working directory.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from sfc_relp.loading import ZOO_DIR, bundled_models

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import json, sys
import sfc_relp
from sfc_relp.architectures import submodules_for
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.loading import bundled_models, load_model
out = {"file": sfc_relp.__file__, "models": {}}
for name in bundled_models():
    model = load_model(name)
    saes = dictionaries_for(model)
    out["models"][name] = {"submodules": [s.name for s in submodules_for(model.config)],
                           "dictionaries": sorted(saes)}
print(json.dumps(out))
"""


def _bundle_files() -> set[str]:
    return {p.relative_to(ZOO_DIR.parent.parent).as_posix() for p in ZOO_DIR.rglob("*")
            if p.is_file() and (p.suffix in (".json", ".safetensors") or p.name == "ae.pt")}


@pytest.mark.slow
def test_wheel_ships_every_bundled_model_and_its_dictionaries(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "circuits", "data"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(wheels)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("sfc_relp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _bundle_files()
    assert len([n for n in expected if n.endswith("ae.pt")]) >= 19
    assert expected <= names, sorted(expected - names)[:5]

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, cwd=tmp_path)
    empty = tmp_path / "cwd"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SFC_RELP_DICTIONARIES")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
    done = subprocess.run([sys.executable, "-S", "-c", CHECK], cwd=empty, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(target.resolve())
    assert set(result["models"]) == set(bundled_models()) and "tiny-pythia" in result["models"]
    for name, found in result["models"].items():
        assert found["dictionaries"] == sorted(found["submodules"]), name
