"""Package-level rules: the layer import direction, a light `import ember` (its time is measured
in bench/bench_import.py), ruff."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ember"

LAYERS = {
    "ember._util": 0,
    "ember.dtypes": 0,
    "ember.backend": 1,
    "ember.ops": 2,
    "ember.autograd": 3,
    "ember.tensor": 3,
    "ember.creation": 3,
    "ember._tensor_str": 3,
    "ember.graph": 4,
    "ember.nn": 5,
    "ember.optim": 5,
    "ember.data": 5,
    "ember.io": 5,
    "ember.serialization": 5,
    "ember.utils": 5,
    "ember.vision": 6,
    "ember.text": 6,
    "ember.transformers": 7,
    "ember.train": 8,
    "ember.serve": 9,
    "ember.onnx": 9,
    "ember.distributed": 9,
    "ember.cli": 9,
}
# Faces and test support may import from any layer.
UNLAYERED = (
    "ember.testing",
    "ember.tf",
    "ember.cuda",
    "ember",
    "ember.accelerator",
    "ember.linalg",
)


def _layer(module: str):
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_layers_import_only_downwards():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module in UNLAYERED or module.startswith(UNLAYERED[:3]):
            continue
        own = _layer(module)
        assert own is not None, f"{module} is in no layer of DESIGN.md; add it to LAYERS"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            for target in targets:
                if not target.startswith("ember"):
                    if target.split(".")[0] in ("torch", "tensorflow", "jax", "transformers"):
                        violations.append(f"{module} imports the reference {target}")
                    continue
                layer = _layer(target)
                if layer is not None and layer > own:
                    violations.append(f"{module} (L{own}) imports {target} (L{layer})")
    assert not violations, "\n".join(violations)


def test_import_is_light():
    """`import ember` needs only NumPy: nothing heavy comes with it (its time: bench/)."""
    code = (
        "import sys\n"
        "import ember\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'numba', 'tokenizers', 'PIL',"
        " 'transformers', 'scipy', 'ember.nn', 'ember.graph', 'ember.data', 'multiprocessing')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()
    assert out == "[]", f"import ember pulled in heavy modules: {out}"


def test_ruff_finds_nothing():
    """The house lint (pyproject's [tool.ruff.lint]) passes on the whole tree."""
    import shutil

    import pytest

    here = str(pathlib.Path(sys.executable).parent)  # the virtual environment's own ruff first
    ruff = shutil.which("ruff", path=here) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the test extra)")
    result = subprocess.run(
        [ruff, "check", "ember", "tests", "bench", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # House style (STYLE.md): the tree is `ruff format`-clean, so diffs carry changes only.
    result = subprocess.run(
        [ruff, "format", "--check", "ember", "tests", "bench", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, "run `ruff format` on:\n" + result.stdout[-3000:]


def test_transformers_face_reexports_the_trainer_lazily():
    """DESIGN.md's face rule: `from ember.transformers import Trainer` works as HuggingFace's
    import does, and importing ember.transformers (L7) does not import ember.train (L8)."""
    code = (
        "import sys, ember.transformers as t\n"
        "assert 'ember.train' not in sys.modules, 'ember.transformers imported ember.train'\n"
        "from ember.transformers import Trainer, TrainingArguments, get_scheduler, set_seed\n"
        "from ember.transformers import EvalPrediction, DataCollatorWithPadding\n"
        "import ember.train as train\n"
        "assert Trainer is train.Trainer and EvalPrediction is train.EvalPrediction\n"
        "assert 'Trainer' in dir(t)\n"
        "logits, labels = EvalPrediction([[0.0, 1.0]], [1])\n"
        "assert labels == [1] and len(EvalPrediction(1, 2, inputs=3)) == 3\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
