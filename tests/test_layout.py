"""The command lines stay thin: every script a user runs (tools/, datasets/prepare_*.py and the
projects' scripts) only imports its program from a module (of the installed packages, or of
dev/ for the developer programs) and runs it, so that tests and users' scripts import the
same code, and no test loads a script by its path."""
import ast
import glob
import importlib
import os

import pytest

from conftest import REPO

SCRIPTS = sorted(os.path.relpath(p, REPO) for pattern in (
    "tools/*.py", "datasets/prepare_*.py", "projects/*/*.py", "projects/ReinPanoptic/prepare/*.py")
    for p in glob.glob(os.path.join(REPO, pattern)))


def _program(path):
    """The module a script runs its main() from, and whether the script holds anything else."""
    tree = ast.parse(open(os.path.join(REPO, path)).read())
    modules, other = [], []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name in ("main", "run") for a in node.names):
            modules.append(node.module)
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.If)):
            continue  # imports; the `if __name__ == "__main__":` call
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        elif isinstance(node, ast.Expr) and "sys.path.insert" in ast.unparse(node) and "dev" in ast.unparse(node):
            continue  # a developer program: dev/ on the path
        else:
            other.append(ast.unparse(node).splitlines()[0])
    return modules, other


def test_there_are_scripts_to_check():
    assert {"tools/train_net.py", "datasets/prepare_gtav.py", "projects/ReinDet/train_net.py",
            "projects/ReinPanoptic/prepare/prepare_acdc_panoptic.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS)
def test_each_script_runs_a_program_of_a_module(path):
    modules, other = _program(path)
    assert not other, f"{path} holds code of its own ({other[0]}): move it into the package"
    assert modules, f"{path} imports no main() / run()"
    for name in modules:
        program = importlib.import_module(name)  # importable: an installed module or dev/'s
        assert callable(getattr(program, "main", None)), name
        if not name.startswith("rein_"):
            assert os.path.isfile(os.path.join(REPO, "dev", f"{name}.py")), name


# The tests that load a file by its path, and the file each loads that way (neither a script):
# anything else imports the script's module instead.
LOADED_BY_PATH = {
    "tests/test_reference_parity_cnn.py": "make_weights.py",  # ../shared's fixture generator
    "tests/test_every_config.py": "test_panoptic_datasets.py",  # ReinPanoptic's dataset writers
}


def _names_spec_from_file_location(tree) -> list:
    """Line numbers where ``tree`` names importlib.util.spec_from_file_location (called,
    aliased or imported)."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "spec_from_file_location"
            or isinstance(node, ast.Name) and node.id == "spec_from_file_location"
            or isinstance(node, ast.ImportFrom) and any(a.name == "spec_from_file_location" for a in node.names)]


def test_no_test_loads_a_script_by_path():
    test_files = glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True) + glob.glob(
        os.path.join(REPO, "projects", "*", "tests", "**", "*.py"), recursive=True)
    loading = {}
    for path in test_files:
        source = open(path).read()
        lines = _names_spec_from_file_location(ast.parse(source))
        if lines:
            loading[os.path.relpath(path, REPO)] = (lines, source)
    refused = [f"{rel}:{lines[0]}" for rel, (lines, _) in sorted(loading.items()) if rel not in LOADED_BY_PATH]
    assert not refused, "import the script's module instead of loading it by path: " + ", ".join(refused)
    for rel, target in LOADED_BY_PATH.items():  # (a stale entry would let a new loader in unseen)
        assert rel in loading and target in loading[rel][1], f"{rel} no longer loads {target} by path"
