"""The layers of ../shared/STYLE.md, as pyproject's import-linter contracts state them, hold for the code
(every import counts, function-level ones included): nothing imports a layer above it and no package has
an import cycle among its modules."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_contract_sees_function_level_imports(tmp_path):
    """An upward import hidden in a function body breaks the contract (a copy of the package, so the tree
    under test is not touched)."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "stargan", copy / "stargan", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "stargan" / "config.py").write_text((copy / "stargan" / "config.py").read_text()
                                                 + "\n\ndef _upward():\n    from stargan import cli  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                             "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "stargan.config is not allowed to import stargan.cli" in result.stdout
