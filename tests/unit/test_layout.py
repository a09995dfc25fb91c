"""The package's layers, checked in its source with ast: private names stay in their module, and old paths import."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import unittest
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dbtestcase"
MAX_LINES = 300
# The layers that may import a test framework, and the modules that hold only the throwaway servers.
RUNNERS = "dbtestcase.runners"
FRAMEWORKS = ("unittest", "nose2", "pytest", "_pytest")
# What the servers may import beyond the standard library: annotations only, and MariaDB's optional readiness probe.
SERVER_EXTRAS = {"typing_extensions": "under TYPE_CHECKING", "pymysql": "only where installed (find_spec first)"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names."""
    if not node.level:
        return node.module or ""
    base = package_of(name, path).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


class Layout(unittest.TestCase):
    def imports(self):
        """(importer, importer path, imported module, imported name or None, line) for every import of the package."""
        for name, path in modules().items():
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    module = absolute(name, path, node)
                    for alias in node.names:
                        yield name, path, module, alias.name, node.lineno
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        yield name, path, alias.name, None, node.lineno

    def test_no_module_imports_another_modules_private_names(self) -> None:
        """A private module is imported only from inside its package; no other private name is imported at all."""
        known = modules()
        problems = []
        for importer, path, module, imported, line in self.imports():
            if not module.startswith("dbtestcase"):
                continue
            target = f"{module}.{imported}" if imported else module
            parts = target.split(".")
            for depth, part in enumerate(parts):
                if not is_private(part):
                    continue
                owner = ".".join(parts[:depth])  # the package the private name belongs to
                is_module = ".".join(parts[: depth + 1]) in known
                inside = (package_of(importer, path) + ".").startswith(owner + ".")
                if not is_module or not inside:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
                break
        self.assertEqual(problems, [])

    def test_every_import_of_the_package_resolves(self) -> None:
        """Every relative import names a module that exists, the late ones inside functions included."""
        known = modules()
        missing = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
                   for _, path, module, _, line in self.imports() if module.startswith("dbtestcase") and module not in known]
        self.assertEqual(missing, [])

    def test_no_private_attribute_of_another_object(self) -> None:
        """No ``obj._name`` but on self, cls or super(): other objects are driven through their public methods."""
        problems = []
        for path in modules().values():
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and is_private(node.attr):
                    owner = node.value
                    if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                        continue
                    if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                        continue  # a subclass extending its base class's hook
                    if node.attr.startswith("_dbtc_"):  # the kit's marks on a test class and its functions
                        continue
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses .{node.attr}")
        self.assertEqual(problems, [])

    def test_only_the_runner_adapters_import_a_test_framework(self) -> None:
        """The core, the backends and the servers stay framework-free (unittest, nose2, pytest)."""
        problems = [
            f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            for importer, path, module, _, line in self.imports()
            if module.split(".")[0] in FRAMEWORKS and not importer.startswith(RUNNERS)
        ]
        self.assertEqual(problems, [])

    def test_the_servers_use_the_standard_library_only(self) -> None:
        """dbtestcase.servers imports no SQLAlchemy and no driver: the watchdog runs it with python -I -S."""
        stdlib = set(sys.stdlib_module_names) if hasattr(sys, "stdlib_module_names") else None
        problems = []
        for importer, path, module, _, line in self.imports():
            if not importer.startswith("dbtestcase.servers"):
                continue
            top = module.split(".")[0]
            allowed = top == "dbtestcase" and (module.startswith("dbtestcase.servers") or module in (
                "dbtestcase.exceptions", "dbtestcase.workers")) or top == "__future__"
            if not allowed and top not in SERVER_EXTRAS and (stdlib is None or top not in stdlib or top == "dbtestcase"):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
        self.assertEqual(problems, [])

    def test_no_module_is_over_the_line_limit(self) -> None:
        """Every module is small enough to read in one sitting."""
        long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
        self.assertEqual(long, {})

    def test_old_import_paths_still_import(self) -> None:
        """The documented paths of 0.2 import, with the names users and CI take from them."""
        expected = {
            "dbtestcase.nose2plugin": ["DbTestCasePlugin"],
            "dbtestcase.server": ["PostgresServer", "shared_server", "find_bindir", "embedded_bindir", "ENV_BINDIR"],
            "dbtestcase.mariadb_server": ["MariaDBServer", "shared_mariadb_server", "find_mariadbd", "ENV_MARIADB_BINDIR"],
            "dbtestcase.binaries": ["embedded_bindir", "find_bindir", "ENV_BINDIR", "EMBEDDED_PACKAGES"],
            "dbtestcase.workers": ["run_id", "worker_id", "ENV_RUN_ID", "ENV_WORKER"],
        }
        for module, names in expected.items():
            imported = importlib.import_module(module)
            self.assertEqual([n for n in names if not hasattr(imported, n)], [], module)
        import dbtestcase

        self.assertEqual(dbtestcase.__all__, sorted(dbtestcase.__all__))
        self.assertEqual([n for n in dbtestcase.__all__ if not hasattr(dbtestcase, n)], [])

    def test_importing_the_package_imports_no_framework_plugin_or_server(self) -> None:
        """import dbtestcase loads neither nose2, pytest, greenlet nor the server modules."""
        code = ("import sys, dbtestcase\n"
                "print(sorted(m for m in ('nose2', 'pytest', 'greenlet', 'dbtestcase.servers.postgresql',"
                " 'dbtestcase.servers.mariadb') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]")


class Collection(unittest.TestCase):
    def test_collecting_the_suite_starts_no_server(self) -> None:
        """pytest --collect-only on the whole suite, with no URL: no throwaway server is started."""
        env = {k: v for k, v in os.environ.items() if k not in ("DBTESTCASE_URL", "DBTESTCASE_RUN_ID")}
        code = ("import sys, pytest\n"
                "from dbtestcase.servers import postgresql, mariadb\n"
                "status = pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', 'tests'])\n"
                "started = [m.__name__ for m in (postgresql, mariadb) if m._shared.current is not None]\n"
                "print('STARTED', started)\n"
                "sys.exit(status)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, env=env,
                              timeout=300)
        self.assertEqual(done.returncode, 0, done.stdout[-2000:] + done.stderr[-2000:])
        self.assertTrue("STARTED []" in done.stdout, done.stdout[-300:])


class PytestPlugin(unittest.TestCase):
    def test_a_suite_that_does_not_use_the_kit_pays_nothing(self) -> None:
        """With the plugin loaded (the pytest11 entry point), an unrelated suite imports no SQLAlchemy or driver."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "test_plain.py").write_text(
                "import sys\n\n"
                "def test_plain(pytestconfig):\n"
                "    assert pytestconfig.pluginmanager.has_plugin('dbtestcase')\n"
                "    loaded = [m for m in ('sqlalchemy', 'psycopg2', 'pymysql', 'nose2') if m in sys.modules]\n"
                "    assert loaded == [], loaded\n"
            )
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py"],
                                  capture_output=True, text=True, cwd=tmp, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_an_xdist_worker_is_named_without_the_plugin(self) -> None:
        """import dbtestcase in an xdist worker maps its identity, also with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1."""
        env = {**os.environ, "PYTEST_XDIST_WORKER": "gw7", "PYTEST_XDIST_TESTRUNUID": "run-abc", "DBTESTCASE_WORKER": "",
               "DBTESTCASE_RUN_ID": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        code = "import dbtestcase, dbtestcase.workers as w; print(w.worker_id(), w.run_id())"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        self.assertEqual(done.stdout.split(), ["gw7", "run-abc"])
