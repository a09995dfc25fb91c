"""The MariaDB and SQLite rows of make bench: per-test cost, TRUNCATE, and one reset of the schema."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import sqlalchemy as sa
from common import ROUNDS, floor, interleaved, schema, unittest_alone, unittest_runner

import dbtestcase
from dbtestcase._urls import parse_url
from dbtestcase.core import reset_schema

TABLES = 50


def clear_tables(connection: sa.Connection, metadata: sa.MetaData) -> None:
    """What a TRUNCATE-per-test suite does on this backend, committed."""
    tables = metadata.sorted_tables
    if connection.dialect.name == "sqlite":  # no TRUNCATE: DELETE, children first
        for table in reversed(tables):
            connection.execute(table.delete())
    else:  # MySQL/MariaDB: one table per TRUNCATE, foreign keys switched off meanwhile
        connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        for table in tables:
            connection.exec_driver_sql(f"TRUNCATE TABLE {table.name}")
        connection.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def measure(url: sa.engine.URL, count: int = 300) -> dict[str, float]:
    """Seconds per test on ``url`` with a 50-table schema, and seconds per reset of that schema."""
    metadata = schema(TABLES)
    first = metadata.sorted_tables[0]
    database = dbtestcase.TestDatabase(metadata, url).setup()
    try:
        connection = database.connection
        class Kit(dbtestcase.DatabaseTestCase):
            def test_empty(self) -> None:
                pass

            def test_insert(self) -> None:
                self.connection.execute(first.insert().values(name="x"))

        Kit.database = database
        results = interleaved(
            {
                "unittest alone": (unittest_alone(), count),
                "floor, empty": (floor(connection), count),
                "kit, empty": (unittest_runner(Kit, "test_empty"), count),
                "floor, one INSERT": (floor(connection, lambda: connection.execute(first.insert().values(name="x"))), count),
                "kit, one INSERT": (unittest_runner(Kit, "test_insert"), count),
            }
        )
        Kit.doClassCleanups()
    finally:
        database.teardown()
    alone = results.pop("unittest alone")
    results["kit, empty"] -= alone
    results["kit, one INSERT"] -= alone

    engine = sa.create_engine(url)
    try:
        with engine.connect() as other:
            metadata.create_all(other)
            other.commit()

            def truncate() -> None:
                other.execute(first.insert().values(name="x"))
                clear_tables(other, metadata)
                other.commit()

            results.update(interleaved({"TRUNCATE, one INSERT": (truncate, 5)}))
        resets = []
        for _ in range(3):
            start = time.perf_counter()
            reset_schema(engine, metadata)
            resets.append(time.perf_counter() - start)
        results["one reset"] = statistics.median(resets)
        dbtestcase.drop_all(engine, metadata, allow_destructive=True)
    finally:
        engine.dispose()
    return results


def print_rows(title: str, results: dict[str, float]) -> None:
    print(f"\n{title}, {TABLES} tables (median of {ROUNDS} interleaved rounds)")
    for body in ("empty", "one INSERT"):
        floor, kit = results[f"floor, {body}"], results[f"kit, {body}"]
        print(f"  {'floor, ' + body:36} {floor * 1e6:8.0f}us")
        print(f"  {'kit, ' + body:36} {kit * 1e6:8.0f}us {kit / floor:8.2f}x the floor")
    truncate, kit = results["TRUNCATE, one INSERT"], results["kit, one INSERT"]
    print(f"  {'TRUNCATE every table, one INSERT':36} {truncate * 1e6:8.0f}us {truncate / kit:8.0f}x the kit")
    print(f"  {'one reset (reflect, drop, create)':36} {results['one reset'] * 1e3:8.0f}ms   once per run")


def report_other_backends(postgres_url: sa.engine.URL) -> None:
    """Print the MariaDB row (when a server is at hand), the SQLite row, and PostgreSQL's reset cost."""
    mysql = os.environ.get("DBTESTCASE_MYSQL_URL", "").strip()
    if not mysql:
        from dbtestcase.mariadb_server import find_mariadbd, shared_mariadb_server

        try:
            find_mariadbd()
            mysql = shared_mariadb_server().url
        except FileNotFoundError:
            print("\nMariaDB: skipped (set DBTESTCASE_MYSQL_URL or install mariadbd)")
    if mysql:
        url = parse_url(mysql)
        print_rows(f"MariaDB/MySQL at {url.render_as_string(hide_password=True)}", measure(url))
    with tempfile.TemporaryDirectory() as folder:
        print_rows("SQLite (a file)", measure(parse_url(f"sqlite:///{folder}/test.db")))
