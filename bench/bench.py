"""make bench: the per-test cost of DatabaseTestCase against its alternatives, as ratios.

Everything is measured in one run on one server: $DBTESTCASE_URL if set, else a throwaway
PostgreSQL started by dbtestcase. Per-test times are medians of several rounds.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlalchemy.orm import Session

import dbtestcase
from dbtestcase.server import PostgresServer, shared_server

ROUNDS = 5
# Rows: "floor" = raw SAVEPOINT / ROLLBACK TO SAVEPOINT on the DBAPI cursor; "recipe" = the
# hand-written SQLAlchemy 2 recipe (begin_nested + Session(join_transaction_mode=
# "create_savepoint") per test); "kit" = DatabaseTestCase run by unittest, unittest's own cost
# taken out. "session used" rows all run the same body, session.execute(select(1)).


def schema(tables: int) -> sa.MetaData:
    """``tables`` tables, each with a serial key, a text column and a foreign key to the previous one."""
    metadata = sa.MetaData()
    for i in range(tables):
        columns = [sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50))]
        if i:
            columns.append(sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"bench_{i - 1}.id")))
        sa.Table(f"bench_{i}", metadata, *columns)
    return metadata


def per_test(run_one: Callable[[], None], count: int) -> float:
    """Median seconds per call of ``run_one`` over ROUNDS rounds of ``count`` calls."""
    for _ in range(min(count, 20)):  # warm up caches and the server
        run_one()
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(count):
            run_one()
        rounds.append((time.perf_counter() - start) / count)
    return statistics.median(rounds)


def unittest_runner(case: type[unittest.TestCase], name: str) -> Callable[[], None]:
    """Run one test method the way a runner does (TestCase.run with a result)."""
    result = unittest.TestResult()

    def run_one() -> None:
        case(name).run(result)
        if result.errors or result.failures:
            raise RuntimeError((result.errors + result.failures)[0][1])

    return run_one


def measure_isolation(url: sa.engine.URL, tables: int, count: int) -> dict[str, float]:
    """Seconds per test for each way of isolating tests, on a schema of ``tables`` tables."""
    metadata = schema(tables)
    first = metadata.sorted_tables[0]
    results: dict[str, float] = {}
    database = dbtestcase.TestDatabase(metadata, url).setup()
    try:
        connection = database.connection
        raw = connection.connection.dbapi_connection
        cursor = raw.cursor()

        def floor_empty() -> None:
            cursor.execute("SAVEPOINT floor")
            cursor.execute("ROLLBACK TO SAVEPOINT floor")

        def floor_body() -> None:
            # The same session body, with the two raw round trips as the only isolation: a
            # "rollback_only" Session emits no SAVEPOINT of its own.
            cursor.execute("SAVEPOINT floor")
            session = Session(bind=connection, join_transaction_mode="rollback_only")
            session.execute(sa.select(1)).all()
            session.close()
            cursor.execute("ROLLBACK TO SAVEPOINT floor")

        def recipe(body: bool) -> Callable[[], None]:
            def run_one() -> None:  # the hand-written SQLAlchemy 2 recipe
                savepoint = connection.begin_nested()
                session = Session(bind=connection, join_transaction_mode="create_savepoint")
                if body:
                    session.execute(sa.select(1)).all()
                session.close()
                savepoint.rollback()

            return run_one

        class Plain(unittest.TestCase):
            def test_empty(self) -> None:
                pass

        class Kit(dbtestcase.DatabaseTestCase):
            def test_empty(self) -> None:
                pass

            def test_session(self) -> None:
                self.session.execute(sa.select(1)).all()

            def test_write(self) -> None:
                self.session.execute(sa.insert(first).values(name="x"))
                self.session.commit()

        Kit.database = database
        results["unittest alone"] = per_test(unittest_runner(Plain, "test_empty"), count)
        results["floor, empty"] = per_test(floor_empty, count)
        results["floor, session used"] = per_test(floor_body, count)
        results["recipe, empty"] = per_test(recipe(False), count)
        results["recipe, session used"] = per_test(recipe(True), count)
        results["kit, empty"] = per_test(unittest_runner(Kit, "test_empty"), count) - results["unittest alone"]
        results["kit, session used"] = per_test(unittest_runner(Kit, "test_session"), count) - results["unittest alone"]
        results["kit, session insert+commit"] = (
            per_test(unittest_runner(Kit, "test_write"), count) - results["unittest alone"]
        )
        Kit.doClassCleanups()
    finally:
        database.teardown()

    engine = sa.create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)

            def create_drop() -> None:
                metadata.create_all(conn)
                conn.execute(sa.insert(first).values(name="x"))
                metadata.drop_all(conn)

            def truncate() -> None:
                conn.execute(sa.insert(first).values(name="x"))
                conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

            results["drop_all/create_all"] = per_test(create_drop, max(3, count // 100))
            metadata.create_all(conn)
            try:
                results["TRUNCATE"] = per_test(truncate, max(10, count // 10))
            finally:
                metadata.drop_all(conn)
    finally:
        engine.dispose()
    return results


def measure_server() -> dict[str, float]:
    """Cold start (initdb) and cached start (copy of the initialized cluster) to first query."""

    def start_and_query(cache_dir: str) -> float:
        start = time.perf_counter()
        with PostgresServer(cache_dir=cache_dir) as server:
            engine = sa.create_engine(server.url, poolclass=sa.pool.NullPool)
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            elapsed = time.perf_counter() - start
            engine.dispose()
        return elapsed

    with tempfile.TemporaryDirectory() as cache:
        cold = start_and_query(cache)
        cached = statistics.median(start_and_query(cache) for _ in range(5))
    return {"cold": cold, "cached": cached}


def main() -> int:
    url_text = os.environ.get("DBTESTCASE_URL", "").strip()
    url = dbtestcase.urls.parse_url(url_text) if url_text else dbtestcase.urls.parse_url(shared_server().url)
    print(f"server: {url.render_as_string(hide_password=True)}")
    ok = True
    by_size = {}
    for tables, count in ((5, 400), (50, 400)):
        by_size[tables] = results = measure_isolation(url, tables, count)
        floor_empty, floor_body = results["floor, empty"], results["floor, session used"]
        print(
            f"\nper-test cost at {tables} tables (median of {ROUNDS} rounds; kit = DatabaseTestCase "
            "setUp+tearDown, unittest's own cost subtracted)"
        )
        print(f"  {'':34} {'per test':>12} {'vs floor':>9} {'vs recipe':>9}")
        for name, value in results.items():
            floor = floor_body if "session" in name else floor_empty
            recipe = results["recipe, session used"] if "session" in name else results["recipe, empty"]
            print(f"  {name:34} {value * 1e6:10.0f}us {value / floor:8.2f}x {value / recipe:8.2f}x")
        for kind, floor, recipe in (
            ("empty", floor_empty, results["recipe, empty"]),
            ("session used", floor_body, results["recipe, session used"]),
        ):
            kit = results[f"kit, {kind}"]
            within = kit <= 3 * floor and kit <= recipe
            ok &= within
            print(f"  target kit ({kind}) <= 3x floor and <= recipe: {'met' if within else 'MISSED'}")
        body = floor_body - floor_empty
        print(
            f"  setUp+tearDown alone (session body's own {body * 1e6:.0f}us taken out): floor "
            f"{floor_empty * 1e6:.0f}us, kit {(results['kit, session used'] - body) * 1e6:.0f}us, "
            f"recipe {(results['recipe, session used'] - body) * 1e6:.0f}us"
        )
        kit = results["kit, session used"]
        print(
            f"  per test, drop_all/create_all costs {results['drop_all/create_all'] / kit:,.0f}x and "
            f"TRUNCATE {results['TRUNCATE'] / kit:,.0f}x the kit with the session used"
        )
        if tables == 50:
            met = results["drop_all/create_all"] >= 500 * kit and results["TRUNCATE"] >= 20 * kit
            ok &= met
            print(f"  target at 50 tables (>= 500x cheaper than drop/create, >= 20x than TRUNCATE): {'met' if met else 'MISSED'}")
    server = measure_server()
    floor = 0.25
    print("\nthrowaway PostgreSQL, start to first query")
    print(f"  cold (initdb):          {server['cold']:.2f}s")
    ratio = server["cached"] / floor
    print(f"  cached (copy template): {server['cached']:.2f}s = {ratio:.2f}x the 0.25s floor measured in the notes")
    met = server["cached"] <= 2 * floor
    ok &= met
    print(f"  target cached start <= 2x floor: {'met' if met else 'MISSED'}")
    print(f"\nall targets {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
