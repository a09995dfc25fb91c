"""make bench: the per-test cost of DatabaseTestCase against its alternatives, as ratios.

Everything is measured in one run on one server: $DBTESTCASE_URL if set, else a throwaway
PostgreSQL started by dbtestcase. The approaches are timed in interleaved rounds (each round runs
every approach in turn), so a change in the machine's load hits them all alike; a figure is the
median of the rounds.

Rows: "floor" = a hand-written SAVEPOINT / ROLLBACK TO SAVEPOINT on the DBAPI cursor (two round
trips; see common.floor_statements); "recipe" =
the hand-written SQLAlchemy 2 recipe (begin_nested + Session(join_transaction_mode=
"create_savepoint") per test); "kit" = DatabaseTestCase run by unittest, with unittest's own cost
taken out. Rows with the same body are compared with each other: "empty" and "session used"
(session.execute(select(1))); "kit, bound scoped_session used" runs that body through an
application's global scoped_session bound with bind_sessions; "kit async" runs AsyncDatabaseTestCase
on asyncpg, in the same rounds, against the sync floor. drop_all + create_all and TRUNCATE of every table are timed as the
setUp + tearDown of suites that isolate tests that way, against the kit's (empty body).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import Session, scoped_session, sessionmaker  # noqa: E402

import dbtestcase  # noqa: E402
from dbtestcase._urls import parse_url  # noqa: E402
from dbtestcase.server import PostgresServer, shared_server  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from async_rows import async_approaches, available, report_async  # noqa: E402
from common import ROUNDS, floor, interleaved, schema, unittest_alone, unittest_runner  # noqa: E402
from other_backends import report_other_backends  # noqa: E402


def measure(url: sa.engine.URL, tables: int, count: int) -> dict[str, float]:
    """Seconds per test for each approach and body, on a schema of ``tables`` tables."""
    metadata = schema(tables)
    database = dbtestcase.TestDatabase(metadata, url).setup()
    engine = sa.create_engine(url)
    other = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        connection = database.connection

        def session_body() -> None:
            # The kit's session body; a "rollback_only" Session emits no SAVEPOINT of its own.
            session = Session(bind=connection, join_transaction_mode="rollback_only")
            session.execute(sa.select(1)).all()
            session.close()

        def recipe(body: bool) -> Callable[[], None]:
            def run_one() -> None:
                savepoint = connection.begin_nested()
                session = Session(bind=connection, join_transaction_mode="create_savepoint")
                if body:
                    session.execute(sa.select(1)).all()
                session.close()
                savepoint.rollback()

            return run_one

        class Kit(dbtestcase.DatabaseTestCase):
            def test_empty(self) -> None:
                pass

            def test_session(self) -> None:
                self.session.execute(sa.select(1)).all()

        app_session = scoped_session(sessionmaker())  # an application's global session

        class Bound(dbtestcase.DatabaseTestCase):
            bind_sessions = [app_session]

            def test_session(self) -> None:
                app_session.execute(sa.select(1)).all()
                app_session.remove()

        Kit.database = Bound.database = database
        more, teardown_async = async_approaches(url, metadata) if available() else ({}, lambda: None)
        names = ", ".join(table.name for table in metadata.sorted_tables)

        def drop_create() -> None:  # setUp + tearDown of a create/drop-per-test suite
            metadata.create_all(other)
            metadata.drop_all(other)

        def truncate() -> None:  # tearDown of a TRUNCATE-per-test suite (its cost hardly depends on rows)
            other.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

        isolation = interleaved(
            {
                "unittest alone": (unittest_alone(), count),
                "floor, empty": (floor(connection), count),
                "recipe, empty": (recipe(False), count),
                "kit, empty": (unittest_runner(Kit, "test_empty"), count),
                "floor, session used": (floor(connection, session_body), count),
                "recipe, session used": (recipe(True), count),
                "kit, session used": (unittest_runner(Kit, "test_session"), count),
                "kit, bound scoped_session used": (unittest_runner(Bound, "test_session"), count),
                **{name: (run_one, count) for name, run_one in more.items()},
            }
        )
        teardown_async()
        Kit.doClassCleanups()
        Bound.doClassCleanups()
        database.teardown()
        cleanup = interleaved({"drop_all + create_all": (drop_create, 3)})
        metadata.create_all(other)
        try:
            cleanup.update(interleaved({"TRUNCATE": (truncate, 10)}))
        finally:
            metadata.drop_all(other)
    finally:
        database.teardown()
        other.close()
        engine.dispose()
    unittest_cost = isolation.pop("unittest alone")
    for name in isolation:
        if name.startswith(("kit", "plain")):
            isolation[name] -= unittest_cost
    return {**isolation, **cleanup}


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


def report(tables: int, results: dict[str, float]) -> bool:
    """Print one table of results; return whether its targets are met."""
    print(f"\nper-test cost at {tables} tables (median of {ROUNDS} interleaved rounds)")
    print(f"  {'':36} {'per test':>10} {'ratio':>28}")
    ok = True
    for body in ("empty", "session used"):
        floor, recipe, kit = (results[f"{who}, {body}"] for who in ("floor", "recipe", "kit"))
        for who, value in (("floor", floor), ("recipe", recipe), ("kit", kit)):
            ratio = f"{value / floor:.2f}x floor, {value / recipe:.2f}x recipe"
            print(f"  {who + ', ' + body:36} {value * 1e6:8.0f}us {ratio:>28}")
        met = kit <= 3 * floor and kit <= recipe
        ok &= met
        print(f"  target: kit ({body}) within 3x the floor and no slower than the recipe: {'met' if met else 'MISSED'}")
    bound, floor = results["kit, bound scoped_session used"], results["floor, session used"]
    print(f"  {'kit, bound scoped_session used':36} {bound * 1e6:8.0f}us {f'{bound / floor:.2f}x floor (session used)':>28}")
    report_async(results)
    kit = results["kit, empty"]
    print("  setUp + tearDown of the alternatives (empty body), against the kit's:")
    for name in ("drop_all + create_all", "TRUNCATE"):
        value = results[name]
        print(f"  {name + ' per test':36} {value * 1e6:8.0f}us {f'{value / kit:,.0f}x the kit':>28}")
    if tables == 50:
        met = results["drop_all + create_all"] >= 500 * kit and results["TRUNCATE"] >= 20 * kit
        ok &= met
        print(f"  target: kit >= 500x cheaper than drop/create and >= 20x than TRUNCATE: {'met' if met else 'MISSED'}")
    return ok


def main() -> int:
    url_text = os.environ.get("DBTESTCASE_URL", "").strip()
    url = parse_url(url_text or shared_server().url)
    print(f"server: {url.render_as_string(hide_password=True)}")
    ok = True
    for tables in (5, 50):
        ok &= report(tables, measure(url, tables, count=300))
    server = measure_server()
    floor = 0.25
    print("\nthrowaway PostgreSQL, start to first query")
    print(f"  cold (initdb):          {server['cold']:.2f}s")
    ratio = server["cached"] / floor
    print(f"  cached (copy template): {server['cached']:.2f}s = {ratio:.2f}x the 0.25s floor measured in the notes")
    met = server["cached"] <= 2 * floor
    ok &= met
    print(f"  target: cached start within 2x the floor: {'met' if met else 'MISSED'}")
    report_other_backends(url)
    print(f"\nall targets {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
