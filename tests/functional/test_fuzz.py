"""Proof by fuzzing: random test classes, run through unittest's runner, never see another test's rows.

Hypothesis generates test classes (how setUp is defined, class data, bound application sessions) whose
tests run random operations: ORM add/commit/rollback/close/begin_nested, flushes that raise
IntegrityError, deferred-constraint violations, raw Core statements, raw transaction control (through
SQLAlchemy and through the DBAPI connection), streaming queries, execution options, failures in the test,
in setUp, tearDown and cleanups. The properties, checked for every generated class:

1. every test starts on a blank slate (its class data only): a check at the very start of setUp;
2. every failing test has a report that names its cause (one of the causes the operations can have);
3. the class's last test, which does nothing but check, passes;
4. after the database's teardown, another connection sees nothing of the run.

``DBTESTCASE_FUZZ_EXAMPLES`` sets the number of classes per driver (CI: a few dozen; ``make fuzz``: 1,000),
``DBTESTCASE_FUZZ_SEED`` the seed (printed, so a failure can be replayed).
"""

from __future__ import annotations

import os
import random
import unittest
from typing import Any, Callable, Optional

import sqlalchemy as sa
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker

import dbtestcase
from tests.functional.support import backend, rows_seen_by_another_connection, run_tests, server_url

EXAMPLES = int(os.environ.get("DBTESTCASE_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("DBTESTCASE_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
DEFERRABLE = backend() in ("postgresql", "sqlite")
NOT_BLANK = "NOT A BLANK SLATE"
# A tearDown or cleanup that writes after a test set stream_results on the connection would stream its INSERT
# (as in production): they write on a plain cursor.
PLAIN = {"stream_results": False}
# What a reported failure may say: the causes the operations below can have. Anything else is a leak or a crash.
CAUSES = ("TransactionEndedError", "DeferredConstraintError", "IntegrityError", "ForeignKeyViolation", "deliberate failure",
          "deliberate setUp error", "deliberate tearDown error", "deliberate cleanup error", "ImplicitCommitError")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "fuzz_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(60), unique=True)
    ref: Mapped[Optional[int]] = mapped_column(  # noqa: UP045 - evaluated at run time, on Python 3.9 too
        sa.ForeignKey("fuzz_items.id", deferrable=True, initially="DEFERRED") if DEFERRABLE else sa.Integer,
        nullable=True)


ITEMS = Item.__table__
AppSession = scoped_session(sessionmaker())  # an application's own session factory, bound by bind_sessions
_names = iter(range(10**9))


def new_name() -> str:
    return f"n{next(_names)}"


# --- the operations a generated test runs -------------------------------------------------------------------
def op_add(test: Any) -> None:
    test.session.add(Item(name=new_name()))


def op_add_commit(test: Any) -> None:
    test.session.add(Item(name=new_name()))
    test.session.commit()


def op_flush_duplicate(test: Any) -> None:
    name = new_name()
    test.session.add(Item(name=name))
    test.session.flush()
    test.session.add(Item(name=name))
    try:
        test.session.flush()
    except sa.exc.IntegrityError:
        test.session.rollback()


def op_rollback(test: Any) -> None:
    test.session.rollback()


def op_close(test: Any) -> None:
    test.session.close()


def op_nested(test: Any) -> None:
    with test.session.begin_nested():
        test.session.add(Item(name=new_name()))


def op_core_insert(test: Any) -> None:
    test.connection.execute(ITEMS.insert().values(name=new_name()))


def op_deferred_violation(test: Any) -> None:
    if DEFERRABLE:
        test.connection.execute(ITEMS.insert().values(name=new_name(), ref=10**8))


def op_raw_commit(test: Any) -> None:
    try:
        test.connection.exec_driver_sql(random.choice(["COMMIT", "ROLLBACK", "END"]))
    except dbtestcase.TransactionEndedError:
        pass


def op_dbapi_commit(test: Any) -> None:
    cursor = test.connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute("COMMIT")
    finally:
        cursor.close()


def op_stream(test: Any) -> None:
    list(test.session.scalars(sa.select(Item).execution_options(yield_per=2)))
    test.connection.execute(sa.select(ITEMS.c.id), execution_options={"stream_results": True}).all()


def op_connection_option(test: Any) -> None:
    test.connection.execution_options(stream_results=True)


def op_app_commit(test: Any) -> None:
    if type(test).bind_sessions:  # the application's session, bound to the test by bind_sessions
        AppSession.add(Item(name=new_name()))
        AppSession.commit()


def op_fail(test: Any) -> None:
    raise AssertionError("deliberate failure")


OPERATIONS: dict[str, Callable[[Any], None]] = {
    name[3:]: function for name, function in globals().items() if name.startswith("op_")
}


# --- the generated classes ------------------------------------------------------------------------------------
def check_blank(test: Any) -> None:
    """The very first thing of every test: only the class data is there."""
    found = test.connection.scalar(sa.select(sa.func.count()).select_from(ITEMS))
    if found != type(test).class_rows:
        raise AssertionError(f"{NOT_BLANK}: {found} rows, {type(test).class_rows} expected")


def make_class(database: dbtestcase.TestDatabase, plan: dict[str, Any]) -> type:
    """A DatabaseTestCase subclass as ``plan`` says."""
    def run_ops(ops: list[str]) -> Callable[[Any], None]:
        if "connection_option" in ops:  # streaming on the connection breaks its savepoints, as in production: last
            ops = ops[: ops.index("connection_option") + 1]

        def test(self: Any) -> None:
            for op in ops:
                OPERATIONS[op](self)
        return test

    body: dict[str, Any] = {"database": database, "class_rows": plan["class_rows"]}
    for number, ops in enumerate(plan["tests"]):
        body[f"test_{number:02d}"] = run_ops(ops)
    body["test_zz_final"] = lambda self: None  # checks the slate, in setUp, like every test
    if plan["bind"]:
        body["bind_sessions"] = [AppSession]
    if plan["class_rows"]:
        rows = plan["class_rows"]

        @classmethod  # type: ignore[misc]
        def setUpTestData(cls: Any) -> None:  # noqa: N802
            cls.session.add_all([Item(name=new_name()) for _ in range(rows)])
        body["setUpTestData"] = setUpTestData

    style, extra = plan["setup"], plan["extra"]

    def set_up(self: Any) -> None:
        check_blank(self)
        if extra == "setup_writes":
            self.session.add(Item(name=new_name()))
            self.session.commit()
        if extra == "setup_error":
            raise RuntimeError("deliberate setUp error")
        if extra == "cleanup_writes":
            self.addCleanup(lambda: self.connection.execute(ITEMS.insert().values(name=new_name()), execution_options=PLAIN))
        if extra == "cleanup_error":
            self.addCleanup(lambda: (_ for _ in ()).throw(RuntimeError("deliberate cleanup error")))

    def tear_down(self: Any) -> None:
        if extra == "teardown_writes":
            self.connection.execute(ITEMS.insert().values(name=new_name()), execution_options=PLAIN)
        if extra == "teardown_error":
            raise RuntimeError("deliberate tearDown error")

    bases: tuple[type, ...] = (dbtestcase.DatabaseTestCase,)
    if style == "mixin":  # a mixin's setUp that never calls super()
        bases = (type("Mixin", (), {"setUp": set_up, "tearDown": tear_down}), dbtestcase.DatabaseTestCase)
    elif style == "method":
        body.update(setUp=set_up, tearDown=tear_down)
    case = type("Fuzzed", bases, body)
    if style == "assigned":  # set after the class was made
        case.setUp, case.tearDown = set_up, tear_down  # type: ignore[method-assign]
    return case


PLANS = st.fixed_dictionaries({
    "tests": st.lists(st.lists(st.sampled_from(sorted(OPERATIONS)), max_size=6), min_size=1, max_size=5),
    "setup": st.sampled_from(["mixin", "method", "assigned"]),
    "extra": st.sampled_from(["", "", "setup_writes", "setup_error", "cleanup_writes", "cleanup_error",
                              "teardown_writes", "teardown_error"]),
    "class_rows": st.integers(0, 2),
    "bind": st.booleans(),
})


def exception_line(report: str) -> str:
    """The line of a traceback that names the exception (SQLAlchemy adds its own lines after it)."""
    lines = [line for line in report.strip().splitlines() if line and not line.startswith((" ", "(Background", "[SQL"))]
    return lines[-1] if lines else report


def drivers() -> list[str]:
    """The drivers to fuzz on the suite's backend: both psycopg generations on PostgreSQL."""
    return ["psycopg2", "psycopg"] if backend() == "postgresql" else [server_url().get_driver_name()]


class Fuzz(unittest.TestCase):
    def check_driver(self, driver: str) -> None:
        url = server_url().set(drivername=f"{server_url().get_backend_name()}+{driver}")
        if backend() == "sqlite":
            url = sa.engine.make_url("sqlite://")  # one writer at a time: a database of its own, in memory
        runs: list[int] = []
        print(f"\nfuzzing {url.get_backend_name()}+{driver}: {EXAMPLES} classes, seed {SEED}", flush=True)

        @seed(SEED)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(PLANS)
        def run(plan: dict[str, Any]) -> None:
            database = dbtestcase.TestDatabase(Base.metadata, url).setup()
            try:
                result = run_tests(make_class(database, plan))
            finally:
                database.teardown()
            reports = [text for _, text in result.failures + result.errors]
            leaks = [exception_line(text) for text in reports if NOT_BLANK in text]
            self.assertEqual(leaks, [], f"a test did not start on a blank slate: {plan}")
            by_test: dict[str, list[str]] = {}
            for test, text in result.failures + result.errors:
                by_test.setdefault(test.id(), []).append(text)
            # A test may fail more than once (a driver's own error first, the kit's report after it): one of its
            # reports must name the cause.
            unnamed = [[exception_line(text) for text in texts] for texts in by_test.values()
                       if not any(cause in text for text in texts for cause in CAUSES)]
            self.assertEqual(unnamed, [], f"a failing test has no report that names its cause: {plan}")
            final = [test for test, _ in result.failures + result.errors if test.id().endswith("test_zz_final")]
            if plan["extra"] not in ("setup_error", "cleanup_error", "teardown_error"):
                self.assertEqual(final, [], f"the last test, which only checks, failed: {plan}")
            if url.get_backend_name() != "sqlite":  # sqlite:// vanishes with its connection
                self.assertEqual(rows_seen_by_another_connection(database.url, ITEMS.name), 0, f"rows survived: {plan}")
            runs.append(result.testsRun)

        run()
        print(f"fuzzed {len(runs)} classes ({sum(runs)} tests) on {driver}, seed {SEED}: no failure", flush=True)

    def test_random_classes_keep_the_blank_slate(self) -> None:
        """Random classes of random tests: blank slates, named failures, nothing left (see the module docstring)."""
        for driver in drivers():
            with self.subTest(driver=driver):
                self.check_driver(driver)
