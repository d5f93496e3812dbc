"""The layout rules CONTRIBUTING.md states, checked on every run so they stay true.

- no module of the package over 500 lines; no function over 60 lines, except argparse declarations
  (`register`: one `add_argument` after another reads best in one place);
- every `type: ignore` names its error code and says why, on the same line;
- no test module imports another test module (shared test code lives in tests/support/);
- the processes that serve requests never import vLLM: only client/offline.py does (it runs vLLM in-process).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reranker_template"
TESTS = Path(__file__).resolve().parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
ARGPARSE_DECLARATIONS = {"register"}


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in package_modules() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these along their concepts: {long}"


def test_no_function_is_over_60_lines() -> None:
    long: dict[str, int] = {}
    for path in package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in ARGPARSE_DECLARATIONS:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = length
    assert not long, f"shorten these at their seams: {long}"


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bare = []
    for path in package_modules():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "type: ignore" in line and not re.search(r"type: ignore\[[\w-]+(, *[\w-]+)*\] *#? *\S", line):
                bare.append(f"{path.relative_to(PACKAGE)}:{number}")
    assert not bare, f"write `# type: ignore[code]  # why`: {bare}"


def test_no_test_module_imports_another() -> None:
    test_modules = {p.stem for p in TESTS.glob("test_*.py")}
    offenders = []
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name} imports {name}" for name in names if name.split(".")[0] in test_modules]
    assert not offenders, f"move shared code into tests/support/: {offenders}"


def test_only_offline_scoring_imports_vllm() -> None:
    importers = []
    for path in package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            if any(name == "vllm" or name.startswith("vllm.") for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert set(importers) <= {"client/offline.py"}, importers
