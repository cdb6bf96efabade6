"""The shape of the tree: the product never leans on the tooling, modules stay small.

These read the source as text (no import runs), so they hold for code paths no other
test reaches.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("project", "dualsend_app", "tasks")
TOOLING_PACKAGE = "devstack"
MAX_MODULE_LINES = 500


def python_files(*packages):
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def imported_modules(path):
    """Every module an `import` or `from … import` in the file names, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                yield ".".join((*base, node.module or ""))
            else:
                yield node.module


def test_the_product_imports_nothing_from_the_tooling():
    """project/, dualsend_app/ and tasks/ run in the production image, which has no devstack/."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files(*PRODUCT_PACKAGES)
        for module in imported_modules(path)
        if module == TOOLING_PACKAGE or module.startswith(f"{TOOLING_PACKAGE}.")
    ]
    assert offenders == []


def test_dualsend_app_holds_the_product_only():
    tooling = {"simulators", "demo", "chaos", "bench", "management"}
    assert sorted(tooling & {p.name for p in (ROOT / "dualsend_app").iterdir()}) == []


def test_the_service_layer_does_not_import_the_tasks():
    """One direction: tasks/ calls dualsend_app/, never the other way round."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("dualsend_app")
        for module in imported_modules(path)
        if module == "tasks" or module.startswith("tasks.")
    ]
    assert offenders == []


@pytest.mark.parametrize("package", [*PRODUCT_PACKAGES, TOOLING_PACKAGE])
def test_no_module_is_over_500_lines(package):
    too_long = {
        str(path.relative_to(ROOT)): length
        for path in python_files(package)
        if "migrations" not in path.parts
        and (length := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_test_module_imports_another():
    """Shared test code lives in support modules (helpers, factories, processes), not in
    test modules or conftest, so each test module reads on its own."""
    test_modules = {path.stem for path in (ROOT / "tests").glob("test_*.py")} | {"conftest"}
    offenders = [
        f"{path.name} imports {module}"
        for path in python_files("tests")
        for module in imported_modules(path)
        if module.startswith("tests.") and module.split(".")[1] in test_modules
    ]
    assert offenders == []
