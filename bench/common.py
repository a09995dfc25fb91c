"""Helpers shared by the benchmarks: a generated schema, interleaved timing, a unittest runner."""

from __future__ import annotations

import statistics
import time
import unittest
from typing import Callable

import sqlalchemy as sa

ROUNDS = 7
Approach = tuple[Callable[[], None], int]  # (one test, tests per round)


def schema(tables: int) -> sa.MetaData:
    """``tables`` tables, each with a serial key, a text column and a foreign key to the previous one."""
    metadata = sa.MetaData()
    for i in range(tables):
        columns = [sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50))]
        if i:
            columns.append(sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"bench_{i - 1}.id")))
        sa.Table(f"bench_{i}", metadata, *columns)
    return metadata


def interleaved(approaches: dict[str, Approach]) -> dict[str, float]:
    """Median seconds per test of each approach, over ROUNDS interleaved rounds."""
    for run_one, count in approaches.values():  # warm up caches and the server
        for _ in range(min(count, 20)):
            run_one()
    rounds: dict[str, list[float]] = {name: [] for name in approaches}
    for _ in range(ROUNDS):
        for name, (run_one, count) in approaches.items():
            start = time.perf_counter()
            for _ in range(count):
                run_one()
            rounds[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in rounds.items()}


def unittest_runner(case: type[unittest.TestCase], name: str) -> Callable[[], None]:
    """Run one test method the way a runner does (TestCase.run with a result)."""
    result = unittest.TestResult()

    def run_one() -> None:
        case(name).run(result)
        if result.errors or result.failures:
            raise RuntimeError((result.errors + result.failures)[0][1])

    return run_one


def floor(connection: sa.Connection, body: Callable[[], object] | None = None) -> Callable[[], None]:
    """One hand-written savepoint test on the DBAPI cursor (the floor), with ``body`` inside."""
    cursor = connection.connection.dbapi_connection.cursor()
    ending = floor_statements(connection.dialect.name)

    def run_one() -> None:
        cursor.execute("SAVEPOINT floor")
        if body is not None:
            body()
        for statement in ending:
            cursor.execute(statement)

    return run_one


class Plain(unittest.TestCase):
    """A test with nothing in it: what unittest itself costs per test, taken out of the kit's rows."""

    def test_empty(self) -> None:
        pass


def unittest_alone() -> Callable[[], None]:
    return unittest_runner(Plain, "test_empty")


def floor_statements(dialect: str) -> list[str]:
    """The statements that end a hand-written savepoint test, without piling up savepoints.

    PostgreSQL and SQLite keep a savepoint after ROLLBACK TO, and a new one of the same name
    stacks on it, which slows every later statement: the floor releases it, in the same round
    trip on PostgreSQL (SQLite has no round trips). MySQL replaces a savepoint of the same name.
    """
    if dialect == "postgresql":
        return ["ROLLBACK TO SAVEPOINT floor; RELEASE SAVEPOINT floor"]
    if dialect == "sqlite":
        return ["ROLLBACK TO SAVEPOINT floor", "RELEASE SAVEPOINT floor"]
    return ["ROLLBACK TO SAVEPOINT floor"]
