"""The same sample projects under unittest, nose2 and pytest, each run in a subprocess.

Each run checks the exit code, the number of tests the runner reports and, from a log the sample
writes, the order of the module setup, the per-test SAVEPOINT and the rollbacks.
"""

from __future__ import annotations

import re
import tempfile
import unittest
from pathlib import Path
from typing import Optional

from tests.functional.support import backend, rows_seen_by_another_connection, run_python, server_url, write_project

MODELS = """
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


    class Base(DeclarativeBase):
        pass


    class Item(Base):
        __tablename__ = "runner_items"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50), unique=True)
"""

# Appends markers and the head of every SQL statement to $SAMPLE_LOG. The listener is set on the
# Engine class before setup_module(), because BEGIN and CREATE TABLE run inside setup_module().
LOGGING = """
    import os

    from sqlalchemy import event, func, select
    from sqlalchemy.engine import Engine

    import dbtestcase
    from models import Base, Item

    WORDS = {"ROLLBACK": 4, "RELEASE": 3, "CREATE": 3, "INSERT": 3, "SAVEPOINT": 2}


    def mark(line):
        with open(os.environ["SAMPLE_LOG"], "a") as log:
            log.write(line + "\\n")


    def log_statement(conn, cursor, statement, parameters, context, executemany):
        for part in statement.split(";"):
            words = part.split()
            if words:
                mark("SQL " + " ".join(words[: WORDS.get(words[0].upper(), 1)]))


    def setUpModule():
        mark("MARK setUpModule")
        event.listen(Engine, "before_cursor_execute", log_statement)
        dbtestcase.setup_module(Base.metadata)


    def tearDownModule():
        mark("MARK tearDownModule")
        dbtestcase.teardown_module()


    def count(session):
        return session.scalar(select(func.count()).select_from(Item))
"""

# Three tests that each commit a row with the same unique name: only a rollback between them lets
# the next one pass. setUp does not call super().setUp().
ORDER_TESTS = LOGGING + """

    class ItemTests(dbtestcase.DatabaseTestCase):
        def setUp(self):
            mark("MARK setUp " + self._testMethodName)

        def record(self):
            mark("MARK test " + self._testMethodName)
            self.assertEqual(count(self.session), 0)
            self.session.add(Item(name="same name"))
            self.session.commit()
            self.assertEqual(count(self.session), 1)

        def test_1(self):
            self.record()

        def test_2(self):
            self.record()

        def test_3(self):
            self.record()
"""

FAILING_TESTS = LOGGING + """

    class FailingTests(dbtestcase.DatabaseTestCase):
        def test_a_fails(self):
            self.session.add(Item(name="left by a failure"))
            self.session.commit()
            self.assertEqual(count(self.session), 99)

        def test_b_errors(self):
            self.session.add(Item(name="left by an error"))
            self.session.commit()
            raise RuntimeError("boom")

        def test_c_blank_slate(self):
            self.assertEqual(count(self.session), 0)
"""

NO_DATABASE_TESTS = """
    import dbtestcase


    class NoDatabaseTests(dbtestcase.DatabaseTestCase):
        def test_nothing(self):
            pass
"""

URL_TESTS = """
    import os
    import unittest

    from sqlalchemy.engine import make_url

    import dbtestcase
    from models import Base


    def setUpModule():
        dbtestcase.setup_module(Base.metadata)


    def tearDownModule():
        dbtestcase.teardown_module()


    class UrlTests(dbtestcase.DatabaseTestCase):
        def test_url(self):
            got, expected = dbtestcase.active_database().url, make_url(os.environ["EXPECTED_URL"])
            self.assertEqual(
                (got.host, got.port or 5432, got.database), (expected.host, expected.port or 5432, expected.database)
            )
"""

TEST_DATABASE_IMPORT = """
    from dbtestcase import DatabaseTestCase, TestDatabase


    def test_nothing():
        assert TestDatabase.__test__ is False
"""

RUNNERS = {
    "unittest": ["-m", "unittest", "-v", "test_sample"],
    "nose2": ["-m", "nose2", "-v", "--plugin", "dbtestcase.nose2plugin", "test_sample"],
    "pytest": ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py"],
}


def counts(runner: str, output: str) -> dict[str, int]:
    """What the runner reports: {"ran", "failures", "errors"} (unittest, nose2) or pytest's {"passed", ...}."""
    if runner == "pytest":
        summary = output.strip().splitlines()[-1]
        return {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|errors?)", summary)}
    ran = re.search(r"^Ran (\d+) tests? in ", output, re.MULTILINE)
    result = {"ran": int(ran.group(1)) if ran else -1}
    status = re.search(r"^FAILED \((.*)\)$", output, re.MULTILINE)
    if status:
        result.update({key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", status.group(1))})
    return result


class RunnerCase(unittest.TestCase):
    """Helpers: a sample project in a temporary directory, and a runner run in a subprocess."""

    def project(self, test_module: str, **more: str) -> Path:
        tmp = tempfile.TemporaryDirectory(prefix="dbtestcase-runner-")
        self.addCleanup(tmp.cleanup)
        return write_project(Path(tmp.name), {"models.py": MODELS, "test_sample.py": test_module, **more})

    def run_sample(self, project: Path, args: list[str], env: Optional[dict[str, str]] = None) -> tuple[int, str]:
        """Run ``python ARGS`` in the project; return the exit code and stdout + stderr."""
        done = run_python(args, cwd=project, env={"SAMPLE_LOG": str(project / "events.log"), **(env or {})})
        return done.returncode, done.stdout + done.stderr

    def events(self, project: Path) -> list[str]:
        return (project / "events.log").read_text().splitlines()


class OrderTests(RunnerCase):
    """Setup, SAVEPOINT, the tests and the rollbacks happen in the same order under every runner."""

    def check(self, runner: str, expected_counts: dict[str, int]) -> None:
        project = self.project(ORDER_TESTS)
        code, output = self.run_sample(project, RUNNERS[runner])
        self.assertEqual(code, 0, output)
        self.assertEqual(counts(runner, output), expected_counts, output)
        log = self.events(project)
        context = "\n".join(log)

        def find(wanted: str, start: int = 0, exact: bool = False) -> int:
            for i in range(start, len(log)):
                if log[i] == wanted or (not exact and log[i].startswith(wanted)):
                    return i
            self.fail(f"{wanted!r} not found after line {start} of the log:\n{context}")

        start = find("MARK setUpModule")
        # psycopg2 begins the transaction itself, before the first statement: no BEGIN to see there.
        begin = start if backend() == "postgresql" else find("SQL BEGIN", start)
        create = find("SQL CREATE TABLE runner_items", start)  # MySQL: committed, before BEGIN
        savepoint = find("SQL SAVEPOINT dbtestcase_test_", max(begin, create))
        tests = ["test_1", "test_2", "test_3"]
        rollback = savepoint
        for name in tests:
            set_up = find(f"MARK setUp {name}")
            test = find(f"MARK test {name}", set_up)
            self.assertGreater(set_up, rollback, f"{name} began before the previous test was rolled back:\n{context}")
            self.assertEqual(log.count(f"MARK test {name}"), 1, context)
            insert = find("SQL INSERT INTO runner_items", test)
            rollback = find("SQL ROLLBACK TO SAVEPOINT dbtestcase_test_", insert)
        self.assertLess(savepoint, find("SQL INSERT INTO runner_items"), context)
        teardown = find("MARK tearDownModule", rollback)
        final = find("SQL ROLLBACK", teardown, exact=True)
        self.assertEqual([line for line in log[final + 1:] if line.startswith("SQL")], [], context)

    def test_unittest(self) -> None:
        """python -m unittest: exit 0, 3 tests, CREATE, SAVEPOINT, a rollback after each test, a final ROLLBACK."""
        self.check("unittest", {"ran": 3})

    def test_nose2(self) -> None:
        """nose2 with the plugin: exit 0, 3 tests, and the same order of statements as unittest."""
        self.check("nose2", {"ran": 3})

    def test_pytest(self) -> None:
        """pytest: exit 0, 3 passed, and the same order of statements as unittest."""
        self.check("pytest", {"passed": 3})


class FailureTests(RunnerCase):
    """A failing and an erroring test are reported, and the test after them still starts blank."""

    def check(self, runner: str, expected_counts: dict[str, int], verbose_ok: bool) -> str:
        project = self.project(FAILING_TESTS)
        code, output = self.run_sample(project, RUNNERS[runner])
        self.assertNotEqual(code, 0, output)
        self.assertEqual(counts(runner, output), expected_counts, output)
        if verbose_ok:
            self.assertRegex(output, r"test_c_blank_slate \(.*\)( \.\.\.|\n.*\.\.\.)? ok", output)
        self.assertIn("RuntimeError: boom", output)
        return output

    def test_unittest(self) -> None:
        """python -m unittest: failures=1, errors=1, and test_c passes on empty tables."""
        self.check("unittest", {"ran": 3, "failures": 1, "errors": 1}, verbose_ok=True)

    def test_nose2(self) -> None:
        """nose2: failures=1, errors=1, and test_c passes on empty tables."""
        self.check("nose2", {"ran": 3, "failures": 1, "errors": 1}, verbose_ok=True)

    def test_pytest(self) -> None:
        """pytest: 2 failed (a and b), 1 passed (test_c, on empty tables)."""
        output = self.check("pytest", {"failed": 2, "passed": 1}, verbose_ok=False)
        self.assertIn("FAILED test_sample.py::FailingTests::test_a_fails", output)
        self.assertIn("FAILED test_sample.py::FailingTests::test_b_errors", output)


class NoDatabaseTests(RunnerCase):
    """A DatabaseTestCase with no database fails with NoDatabaseError, which says how to fix it."""

    def test_message_under_every_runner(self) -> None:
        """Each runner fails and shows the message naming the class and the setup_module() fix."""
        project = self.project(NO_DATABASE_TESTS)
        expected = (
            "NoDatabaseTests has no database to run on: call dbtestcase.setup_module(Base.metadata) in setUpModule()"
        )
        test_error = {"ran": 1, "errors": 1}
        expected_counts = {"unittest": test_error, "nose2": test_error, "pytest": {"failed": 1}}
        for runner, args in RUNNERS.items():
            with self.subTest(runner=runner):
                code, output = self.run_sample(project, args)
                self.assertNotEqual(code, 0, output)
                self.assertEqual(counts(runner, output), expected_counts[runner], output)
                self.assertIn("NoDatabaseError", output)
                self.assertIn(expected, output)


PACKAGE_INIT = """
    import dbtestcase
    from models import Base

    dbtestcase.setup_module(Base.metadata)  # package-level, at import: torn down at exit
"""

PACKAGE_TEST = """
    import sqlalchemy as sa
    import dbtestcase
    from models import Item


    class {name}(dbtestcase.DatabaseTestCase):
        def test_one(self):
            self.session.add(Item(name="same"))
            self.session.commit()
            self.assertEqual(self.session.scalar(sa.select(sa.func.count()).select_from(Item)), 1)
"""

SETUPCLASS_TESTS = """
    import sqlalchemy as sa
    import dbtestcase
    from models import Base, Item


    class FromSetUpClass(dbtestcase.DatabaseTestCase):
        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            dbtestcase.setup_module(Base.metadata)

        @classmethod
        def tearDownClass(cls):
            dbtestcase.teardown_module()
            super().tearDownClass()

        def test_a(self):
            self.session.add(Item(name="same"))
            self.session.commit()

        def test_b(self):
            self.session.add(Item(name="same"))
            self.session.commit()
"""


class OtherSetupPlaces(RunnerCase):
    """setup_module() also works from a package's __init__ and from setUpClass."""

    def test_package_init(self) -> None:
        """A package that sets up the database at import serves all its modules; nothing is left at exit."""
        url = server_url()
        project = self.project(
            "",
            **{
                "pkg/__init__.py": PACKAGE_INIT,
                "pkg/test_a.py": PACKAGE_TEST.format(name="FirstModule"),
                "pkg/test_b.py": PACKAGE_TEST.format(name="SecondModule"),
            },
        )
        env = {"DBTESTCASE_URL": url.render_as_string(hide_password=False)}
        code, output = self.run_sample(project, ["-m", "unittest", "discover", "-v", "-t", ".", "-s", "pkg"], env)
        self.assertEqual(code, 0, output)
        self.assertEqual(counts("unittest", output), {"ran": 2}, output)
        self.assertEqual(rows_seen_by_another_connection(url, "runner_items"), 0)

    def test_setup_class(self) -> None:
        """setup_module() in setUpClass (after super()) and teardown_module() in tearDownClass."""
        url = server_url()
        project = self.project(SETUPCLASS_TESTS)
        env = {"DBTESTCASE_URL": url.render_as_string(hide_password=False)}
        for runner, args in RUNNERS.items():
            with self.subTest(runner=runner):
                code, output = self.run_sample(project, args, env)
                self.assertEqual(code, 0, output)
                self.assertEqual(rows_seen_by_another_connection(url, "runner_items"), 0)


class Nose2PluginTests(RunnerCase):
    """The nose2 plugin takes the URL from --db-url or from the [dbtestcase] config section."""

    def test_bad_db_url(self) -> None:
        """--db-url with an unparseable URL fails before any test, with a one-line message."""
        project = self.project(URL_TESTS)
        args = ["-m", "nose2", "--plugin", "dbtestcase.nose2plugin", "--db-url", "postgresql://u@host:port/db"]
        code, output = self.run_sample(project, [*args, "test_sample"])
        self.assertNotEqual(code, 0, output)
        self.assertIn("--db-url: cannot parse the database URL 'postgresql://u@host:port/db'", output)
        self.assertNotIn("Ran ", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(len(output.strip().splitlines()), 1, output)

    def test_config_url(self) -> None:
        """url in unittest.cfg's [dbtestcase] section is the database the tests run on."""
        url = real_url()
        config = f"""
            [unittest]
            plugins = dbtestcase.nose2plugin

            [dbtestcase]
            url = {url}
        """
        project = self.project(URL_TESTS, **{"unittest.cfg": config})
        # An empty $DBTESTCASE_URL counts as unset, so only the config file can name the server.
        code, output = self.run_sample(project, ["-m", "nose2", "-v", "test_sample"],
                                       env={"DBTESTCASE_URL": "", "EXPECTED_URL": url})
        self.assertEqual(code, 0, output)
        self.assertEqual(counts("nose2", output), {"ran": 1}, output)


class PytestCollectionTests(RunnerCase):
    """pytest leaves dbtestcase's classes alone when a test module imports them."""

    def test_test_database_not_collected(self) -> None:
        """Importing TestDatabase at module level gives no collection warning or error."""
        project = self.project(TEST_DATABASE_IMPORT)
        code, output = self.run_sample(project, RUNNERS["pytest"])
        self.assertEqual(code, 0, output)
        self.assertEqual(counts("pytest", output), {"passed": 1}, output)
        self.assertNotIn("warning", output.lower())
        self.assertNotIn("cannot collect", output)


def real_url() -> str:
    """A URL of a running server: the suite's (server_url), with its password, for a sample's config."""
    return server_url().render_as_string(hide_password=False)
