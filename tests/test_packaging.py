"""armkit as a package other projects import: one distinct import name (`armkit.*`) that a project's own
`tokenizer/` cannot shadow, exports that load with the heavy training libraries blocked, the package list in
pyproject.toml covering every sub-package, and the dependency rule between armkit's packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

from armkit.decoders import PixelDiT
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("common", "tokenizer", "decoders", "backbones", "recipes")
OLD_NAMES = {"tokenizer", "decoders", "backbones", "recipes", "common"}
HEAVY = ("lightning", "pytorch_lightning", "lightning_fabric", "diffusers", "transformers", "open_clip",
         "torchmetrics", "webdataset", "jsonargparse")

# Any import of a blocked package is recorded and fails, so even one a library would swallow shows up.
BLOCK = f"""
import importlib.abc, sys
ATTEMPTS = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            ATTEMPTS.append(name)
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def python_files() -> list[Path]:
    return [p for d in (*PACKAGE_DIRS, "tests", "benchmarks") for p in (REPO / d).rglob("*.py")] + [
        REPO / "__init__.py"]


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_module_imports_the_old_top_level_names():
    bad = [(str(p.relative_to(REPO)), m) for p in python_files() for m in imported_modules(p)
           if m.split(".")[0] in OLD_NAMES]
    assert bad == []


@pytest.mark.parametrize("package", ["decoders", "backbones", "common"])
def test_decoders_backbones_and_common_never_import_the_tokenizer(package):
    bad = [(str(p.relative_to(REPO)), m) for p in (REPO / package).rglob("*.py") for m in imported_modules(p)
           if m.startswith("armkit.tokenizer") or (package == "common" and m.startswith("armkit.") and
                                                    not m.startswith("armkit.common"))]
    assert bad == []


def test_pyproject_lists_every_subpackage():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"armkit": "."}
    found = {"armkit"} | {"armkit." + ".".join(p.parent.relative_to(REPO).parts)
                          for d in PACKAGE_DIRS for p in (REPO / d).rglob("__init__.py")}
    assert set(config["packages"]) == found


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    encoder = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1})
    tok = Tokenizer(encoder=encoder, levels=[8, 5, 5, 5], projection="mlp",
                    decoder=PixelDiT(size="tiny", image_size=16, patch_size=8, cond_dim=encoder.width))
    with torch.no_grad():  # spread the codes, so that equal indices below are not equal constants
        tok.down[2].weight.mul_(20)
    root = tmp_path_factory.mktemp("pkg")
    folder = tok.save_pretrained(root / "export")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    indices = tok.eval().encode(x)
    assert len(torch.unique(indices)) > 1
    torch.save({"x": x, "indices": indices}, root / "probe.pt")
    return root, folder


def test_export_loads_inside_a_project_with_its_own_tokenizer_package_and_no_training_libraries(export):
    root, folder = export
    project = root / "llamagen_like"
    for name in ("tokenizer", "decoders", "backbones", "recipes", "common"):  # a project's own top-level packages
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"raise ImportError('the project\\'s own {name} was imported')\n")
    code = BLOCK + textwrap.dedent(f"""
        import torch
        from armkit import Tokenizer
        import armkit.tokenizer
        probe = torch.load({str(root / "probe.pt")!r}, weights_only=True)
        tok = Tokenizer.from_pretrained({str(folder)!r})
        images = tok.decode(tok.encode(probe["x"][:2]), steps=2)
        print("module:", armkit.tokenizer.__file__)
        print("equal:", torch.equal(tok.encode(probe["x"]), probe["indices"]), tuple(images.shape))
        print("blocked attempts:", sorted(set(ATTEMPTS)))
        print("heavy loaded:", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert Path(lines["module"]).resolve().parent.parent == REPO.resolve()
    assert lines["equal"] == "True (2, 3, 16, 16)"
    assert lines["blocked attempts"] == "[]" and lines["heavy loaded"] == "[]"


def test_the_same_check_fails_when_the_project_package_shadows_armkit(export, tmp_path):
    """The check above can fail: a project that names its package `armkit` does shadow it."""
    (tmp_path / "armkit").mkdir()
    (tmp_path / "armkit" / "__init__.py").write_text("raise ImportError('shadowed')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", "import armkit"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "shadowed" in result.stderr
