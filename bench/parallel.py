"""Scale test and benchmark: 2,000 generated tests over a 50-table schema, run by 1 and by 2 workers on one server.

The suite. ``generate()`` writes a test project into a temporary folder: ``suite_db.py``, copied from
``bench/parallel_suite/`` (50 ORM models ``entity_0`` ... ``entity_49``, each with a unique ``name``, an indexed
``tag``, and a foreign key and relationship to the table before it; one ``TestDatabase``; the test body), and 20
modules of 5 classes of 20 tests. The database is set up once per worker process, by the first class that runs
there (not at import, so that a runner's main process that only loads the tests opens no connection), and kept
until the process ends: a class given a database that is set up already does not tear it down. Each test works
on a parent and a child table (a class covers 3 neighbouring pairs, as a real class tests one area of a
schema; the suite covers all 49): it checks that both are empty, adds a parent and 3 children tagged with its own
id through ``self.session``, commits (inside its savepoint), reads back *every* row of the child table with its
parent and checks they are exactly its own, updates one, commits, and checks a sum: 14 statements, the kit's
SAVEPOINT and ROLLBACK TO included. A test that saw a row of another test, of its own worker or of the other
one, fails. The children's names are the same in every test and unique: if two workers shared the tables, the
second to insert one would wait for the first's transaction, which lasts the whole run, and the poller below
would see it waiting for a lock.

The measurement. The server is ``$DBTESTCASE_URL`` if set, else dbtestcase's throwaway PostgreSQL, started
once here; either way every run gets it as ``$DBTESTCASE_URL``, with an ``application_name`` that marks the
runs' connections. The suite runs with 1 worker and with 2 workers, back to back, in ``ROUNDS`` rounds (1 then
2 workers in odd rounds, 2 then 1 in even ones). Times are medians over the rounds; the speed-up and the per-test
ratio are the medians of each round's ratios, since this virtual machine's speed drifts (the same work took 9 s of
CPU in one run and 16 s in a later one) and the two runs of a round see about the same machine. Per-test cost is
``wall time x workers / 2000``, the CPU slot a test occupies: at perfect scaling it equals the single-worker time
per test. A thread polls ``pg_stat_activity`` every 50 ms during each run for the runs' connections (and every
connection on the database, the poller's aside), those waiting for a lock, and, when the server runs on this
machine, the CPU time of the runs' backends from ``/proc``. "others" is the machine's busy CPU (``/proc/stat``)
less the runner's processes, their backends and this process, per second of the run: other work on the machine
slows the 2-worker runs most, since they need both cores, and this column tells such runs apart. Each worker
appends, per class, its pid, worker name, schema and timings to a log, from which the report checks that the
workers had schemas of their own and ran side by side.

The runner: nose2, plain for 1 worker and ``--plugin nose2.plugins.mp -N 2`` for 2, with dbtestcase's nose2
plugin in both, as a user would run it (it names the mp workers, which puts their names in their schemas'
names). The mp plugin forks its workers from the main process after that has imported and loaded the suite, so
a worker starts with SQLAlchemy, the models and the tests in memory: 2 workers cost about what 1 costs besides
their tests (start-up and loading once, then each worker creates its 50 tables at the same time), and nose2
itself costs about 0.1 ms per test. pytest with pytest-xdist (``-p no:xdist`` against ``-p xdist -n 2``) starts
each worker as a new interpreter that imports everything and collects all 2,000 tests again, and spends about
2 ms of CPU per unittest-style test on its hooks and reports (the controller handles them for both workers, on
the same 2 cores). ``python -m unittest`` has no parallel mode, and one runner must run both. The middle round
runs a start-up probe, both runners with 1 and 2 workers on 2 classes (40 tests), which shows that fixed cost;
``--compare`` also runs pytest-xdist once on the whole suite.

Targets (issue 5): 2 workers at least 1.6x faster than 1; per-test cost with 2 workers within 1.5x of the
single-worker floor; and, for the proof, every test of every run passed, every worker had a schema of its own,
and none of those schemas is left on the server (the count of every ``dbtestcase_%`` schema, before and after,
is printed too: on a shared server it includes other runs'). ``main()`` prints the report and returns whether
all were met.

Run it with ``python bench/parallel.py`` (options ``--rounds N`` and ``--compare``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from dbtestcase._urls import parse_url  # noqa: E402
from dbtestcase.server import shared_server  # noqa: E402

MODULES, CLASSES, TESTS_PER_CLASS = 20, 5, 20
TESTS = MODULES * CLASSES * TESTS_PER_CLASS
TABLES = 50
WORKERS = 2
ROUNDS = 3
POLL = 0.05
TARGET_SPEEDUP, TARGET_PER_TEST = 1.6, 1.5
PROBE = ["test_area00.TestArea0", "test_area10.TestArea0"]  # 2 classes: the start-up probe runs only these
PROBE_TESTS = len(PROBE) * TESTS_PER_CLASS
TEMPLATE = Path(__file__).resolve().parent / "parallel_suite" / "suite_db.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the generated suite ---------------------------------------------------------------------------------------
def generate(directory: Path) -> None:
    """Write the 2,000-test project into ``directory``."""
    shutil.copy(TEMPLATE, directory / "suite_db.py")
    (directory / "pytest.ini").write_text("[pytest]\n")  # the rootdir: keep pytest from looking further up
    number = 0
    for module in range(MODULES):
        lines = [f'"""Generated by bench/parallel.py: tests {number} to {number + CLASSES * TESTS_PER_CLASS - 1}."""', "",
                 "import suite_db", ""]
        for klass in range(CLASSES):
            group = module * CLASSES + klass
            lines += ["", f"class TestArea{klass}(suite_db.SuiteCase):"]
            for test in range(TESTS_PER_CLASS):
                pair = 1 + (group + test % 3) % (TABLES - 1)  # this class's 3 table pairs, in turn
                lines += [f"    def test_{number:04d}(self) -> None:", f"        self.exercise({pair})", ""]
                number += 1
        (directory / f"test_area{module:02d}.py").write_text("\n".join(lines))
    assert number == TESTS


# --- runners ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runner:
    name: str
    commands: dict[int, list[str]]  # workers -> command
    parse: Callable[[str], Optional[tuple[int, int]]]  # output -> (passed, failed), None if not understood
    probe: list[str]  # arguments that select the PROBE classes


def parse_nose2(output: str) -> Optional[tuple[int, int]]:
    ran = re.search(r"^Ran (\d+) tests? in ", output, re.M)
    if ran is None:
        return None
    failed = sum(int(n) for n in re.findall(r"\b(?:failures|errors|unexpected successes)=(\d+)", output))
    skipped = sum(int(n) for n in re.findall(r"\b(?:skipped|expected failures)=(\d+)", output))
    return int(ran.group(1)) - failed - skipped, failed


def parse_pytest(output: str) -> Optional[tuple[int, int]]:
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not summary:
        return None
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", summary[-1])}
    return counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)


def runners() -> tuple[Runner, Runner]:
    """The chosen runner and the one it is compared with."""
    python = sys.executable
    nose2 = [python, "-m", "nose2", "--no-user-config", "-q", "--plugin", "dbtestcase.nose2plugin"]
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # nose2 loads only the modules named; pytest still collects all 2,000 tests and deselects the others.
    keywords = " or ".join(f"({module} and {klass})" for module, klass in (name.split(".") for name in PROBE))
    return (
        Runner("nose2", {1: nose2, WORKERS: [*nose2, "--plugin", "nose2.plugins.mp", "-N", str(WORKERS)]},
               parse_nose2, PROBE),
        Runner("pytest-xdist", {1: [*pytest, "-p", "no:xdist"], WORKERS: [*pytest, "-p", "xdist", "-n", str(WORKERS)]},
               parse_pytest, ["-k", keywords]),
    )


# --- what the server and the machine do during a run -------------------------------------------------------------
def busy_cpu() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS  # guest time is already counted in user


def process_cpu(pid: int) -> Optional[float]:
    """CPU seconds of a local PostgreSQL backend, or None if ``pid`` is not one on this machine."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
    if not name.startswith("postgres"):
        return None
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS  # utime, stime


class Poller:
    """Samples pg_stat_activity every POLL seconds while a run is on; one connection, opened once."""

    def __init__(self, engine: sa.Engine, application: str) -> None:
        self.connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.query = sa.text(
            "SELECT pid, application_name = :app, wait_event_type = 'Lock' FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).bindparams(app=application)
        self.stop_event = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.reset()

    def reset(self) -> None:
        self.ours = self.everyone = self.waiting = 0
        self.backend_cpu: dict[int, float] = {}
        self.local = True

    def sample(self) -> None:
        rows = self.connection.execute(self.query).all()
        mine = [pid for pid, is_ours, _ in rows if is_ours]
        self.ours = max(self.ours, len(mine))  # read once the thread has ended: no lock needed
        self.everyone = max(self.everyone, len(rows))
        self.waiting = max(self.waiting, sum(1 for _, is_ours, waits in rows if is_ours and waits))
        for pid in mine:  # the CPU a backend has used so far: its last sample stands for its total
            cpu = process_cpu(pid)
            if cpu is None:
                self.local = False
            else:
                self.backend_cpu[pid] = max(cpu, self.backend_cpu.get(pid, 0.0))

    def _loop(self) -> None:
        while not self.stop_event.wait(POLL):
            self.sample()

    def __enter__(self) -> Poller:
        self.reset()
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join()

    def close(self) -> None:
        self.connection.close()


# --- one run ---------------------------------------------------------------------------------------------------
@dataclass
class WorkerLog:
    """What one worker process wrote: its name, schema, tests, and when it ran them."""

    worker: str
    schema: str
    tests: int = 0
    start: float = float("inf")
    end: float = 0.0


@dataclass
class Run:
    round: int
    runner: str
    workers: int
    tests: int
    seconds: float
    passed: int
    failed: int
    connections: int  # the runs' own, at most at once
    database_connections: int  # everyone's on the database but the poller's, at most at once
    lock_waits: int
    client_cpu: float
    server_cpu: Optional[float]
    others: Optional[float]  # cores used by other processes on the machine, on average
    processes: dict[int, WorkerLog] = field(default_factory=dict)
    output: str = ""

    @property
    def per_test(self) -> float:
        return self.seconds * self.workers / self.tests

    @property
    def schemas(self) -> int:
        return len({log.schema for log in self.processes.values()})

    def overlap(self) -> float:
        """The share of the shortest worker's span during which every worker was running (1.0 with one worker)."""
        spans = [(log.start, log.end) for log in self.processes.values()]
        if len(spans) < 2:
            return 1.0
        common = min(end for _, end in spans) - max(start for start, _ in spans)
        return max(0.0, common) / max(1e-9, min(end - start for start, end in spans))


def read_log(path: Path) -> dict[int, WorkerLog]:
    processes: dict[int, WorkerLog] = {}
    if not path.exists():
        return processes
    for line in path.read_text().splitlines():
        pid, worker, schema, tests, start, end = line.split()
        log = processes.setdefault(int(pid), WorkerLog(worker, schema))
        log.tests += int(tests)
        log.start, log.end = min(log.start, float(start)), max(log.end, float(end))
    return processes


def run_suite(number: int, runner: Runner, workers: int, directory: Path, url: str, poller: Poller, probe: bool) -> Run:
    """Run the suite (or the probe's classes) with ``workers`` workers and measure it."""
    log = directory / f"workers-{time.monotonic_ns()}.log"
    env = {**os.environ, "DBTESTCASE_URL": url, "PARALLEL_BENCH_LOG": str(log)}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID", "DBTESTCASE_WORKER", "DBTESTCASE_RUN_ID"):
        env.pop(name, None)  # this process may itself run under a parallel runner
    command = runner.commands[workers] + (runner.probe if probe else [])
    tests = PROBE_TESTS if probe else TESTS
    children, busy, own = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu(), time.process_time()
    with poller:
        start = time.perf_counter()
        completed = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    server = sum(poller.backend_cpu.values()) if poller.local and poller.backend_cpu else None
    others = None
    if server is not None:
        others = max(0.0, busy_cpu() - busy - client - server - (time.process_time() - own)) / seconds
    output = completed.stdout + completed.stderr
    passed, failed = runner.parse(output) or (0, tests)
    if completed.returncode and not failed:
        failed = tests - passed or 1  # a crash after the summary
    return Run(number, runner.name, workers, tests, seconds, passed, failed, poller.ours, poller.everyone, poller.waiting, client,
               server, others, read_log(log), output)


# --- the report ------------------------------------------------------------------------------------------------
HEADER = (f"  {'round':5} {'runner':13} {'workers':>7} {'wall':>7} {'per test':>9} {'passed':>6} {'failed':>6}"
          f" {'conns':>5} {'(db)':>4} {'locks':>5} {'client':>6} {'server':>6} {'others':>6} {'procs':>5}"
          f" {'schemas':>7} {'overlap':>7}")
LEGEND = """\
  wall: the run, start to exit; per test: wall x workers / tests; conns: the runs' connections at most at once,
  (db): every connection on the database but the poller's; locks: the runs' connections seen waiting for a lock;
  client, server: CPU seconds of the runner's processes and of their backends; others: cores (of 2) used by other
  processes on the machine during the run; procs, schemas: worker processes that ran tests, and their distinct
  schemas; overlap: share of the shortest worker's span during which all ran side by side."""


def describe(run: Run, label: str) -> str:
    server = f"{run.server_cpu:5.1f}s" if run.server_cpu is not None else "   n/a"
    others = f"{run.others:6.2f}" if run.others is not None else "   n/a"
    return (f"  {label:5} {run.runner:13} {run.workers:>7} {run.seconds:6.2f}s {run.per_test * 1e3:7.2f}ms"
            f" {run.passed:6} {run.failed:6} {run.connections:5} {run.database_connections:4} {run.lock_waits:5}"
            f" {run.client_cpu:5.1f}s {server} {others} {len(run.processes):5} {run.schemas:7} {run.overlap() * 100:6.0f}%")


@dataclass
class Leftovers:
    """dbtestcase_% schemas on the server: all of them before and after the runs, and those the runs made."""

    before: int
    after: int
    made: int  # schemas the runs' workers reported
    left: int  # of those, still on the server


def count_schemas(engine: sa.Engine, names: Optional[list[str]] = None) -> int:
    query = r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'dbtestcase\_%'"
    with engine.connect() as connection:
        if names is None:
            return connection.execute(sa.text(query)).scalar_one()
        return connection.execute(sa.text(query + " AND nspname = ANY(:names)"), {"names": names}).scalar_one()


def report(runs: list[Run], probes: list[Run], leftovers: Leftovers) -> bool:
    """Print the medians, the probe and the checks; return whether every target was met."""
    singles = sorted((run for run in runs if run.workers == 1), key=lambda run: run.round)
    parallel = sorted((run for run in runs if run.workers == WORKERS), key=lambda run: run.round)
    single, multi = statistics.median(run.seconds for run in singles), statistics.median(run.seconds for run in parallel)
    # Each round's two runs ran back to back: their ratio is not moved by a change of the machine's speed between rounds.
    speedups = [one.seconds / many.seconds for one, many in zip(singles, parallel)]
    speedup = statistics.median(speedups)
    ratio = statistics.median(many.seconds * WORKERS / one.seconds for one, many in zip(singles, parallel))
    print(f"\n  {runs[0].runner}, median of {len(parallel)} rounds:")
    print(f"    1 worker:  {single:6.2f}s, {single / TESTS * 1e3:.2f} ms per test")
    print(f"    {WORKERS} workers: {multi:6.2f}s, {multi * WORKERS / TESTS * 1e3:.2f} ms per test (wall x workers / tests)")
    print(f"    speed-up {speedup:.2f}x, per-test cost with {WORKERS} workers {ratio:.2f}x the single-worker floor "
          f"(medians of the rounds' ratios; ratio of the median times: {single / multi:.2f}x)")
    rounds_text = ", ".join(
        f"{value:.2f}x" + (f" ({many.others:.2f})" if many.others is not None else "") for value, many in zip(speedups, parallel)
    )
    print(f"    each round's speed-up (cores used by other processes during its {WORKERS}-worker run): {rounds_text}")
    if probes:
        print(f"  start-up probe: the same commands on {PROBE_TESTS} tests ({len(PROBE)} classes), once each:")
        for runner in dict.fromkeys(probe.runner for probe in probes):
            times = "   ".join(f"{probe.workers} worker{'s' if probe.workers > 1 else ''} {probe.seconds:5.2f}s"
                               for probe in probes if probe.runner == runner)
            print(f"    {runner:13} {times}")
    busy = [run.others for run in parallel if run.others is not None]
    if busy and max(busy) > 0.25:
        print(f"  note: other processes used {statistics.median(busy):.2f} cores (median; at most {max(busy):.2f}) during "
              f"the {WORKERS}-worker runs, which need both cores: those runs are slowed by the machine, not by dbtestcase.")
    isolated = all(len(run.processes) == WORKERS and run.schemas == WORKERS for run in parallel)
    clean = all(run.failed == 0 and run.passed == run.tests for run in runs + probes)
    tests = sum(run.tests for run in runs + probes)
    print(f"  isolation: {tests} tests in {len(runs + probes)} runs, {sum(run.failed for run in runs + probes)} failed; in "
          f"every {WORKERS}-worker run {'each worker had a schema of its own' if isolated else 'SCHEMAS WERE SHARED'}, "
          f"the workers ran side by side for at least {min(run.overlap() for run in parallel) * 100:.0f}% of the time, "
          f"{max(run.lock_waits for run in runs + probes)} connections waited for a lock")
    print(f"  server connections at most: {max(run.connections for run in runs if run.workers == 1)} with 1 worker, "
          f"{max(run.connections for run in parallel)} with {WORKERS} "
          f"(every client of the database: {max(run.database_connections for run in runs)})")
    print(f"  schemas: the runs' workers made {leftovers.made}, {leftovers.left} of them left on the server; dbtestcase_% "
          f"schemas on the server before the runs {leftovers.before}, after {leftovers.after}")
    checks = [
        (f"{WORKERS} workers at least {TARGET_SPEEDUP}x faster than 1", speedup >= TARGET_SPEEDUP),
        (f"per-test cost with {WORKERS} workers within {TARGET_PER_TEST}x of the single-worker floor", ratio <= TARGET_PER_TEST),
        ("every test passed, so none saw another's rows, and each worker had a schema of its own", clean and isolated),
        ("no schema of the runs left on the server", leftovers.made > 0 and leftovers.left == 0),
    ]
    for text, met in checks:
        print(f"  target: {text}: {'met' if met else 'MISSED'}")
    return all(met for _, met in checks)


def main(argv: Optional[list[str]] = None) -> bool:
    """Run the scale test, print the report, and return whether every target was met.

    Args:
        argv: command-line options (``--rounds N``, ``--compare``); None: the defaults, whatever ``sys.argv`` holds.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of 1 and {WORKERS} workers (default {ROUNDS})")
    parser.add_argument("--compare", action="store_true", help="also run the whole suite once with pytest-xdist")
    options = parser.parse_args([] if argv is None else argv)
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    started = time.perf_counter()
    configured = os.environ.get("DBTESTCASE_URL", "").strip()
    url = parse_url(configured or shared_server().url)
    if url.get_backend_name() != "postgresql":
        print(f"bench/parallel.py measures PostgreSQL (pg_stat_activity, schemas): $DBTESTCASE_URL is {url.get_backend_name()}")
        return False
    application = f"dbtestcase-parallel-bench-{os.getpid()}"
    run_url = url.update_query_dict({"application_name": application}).render_as_string(hide_password=False)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    chosen, other = runners()
    print(f"parallel scale test: {TESTS} tests ({MODULES} modules x {CLASSES} classes x {TESTS_PER_CLASS}) on {TABLES} "
          f"tables, 1 and {WORKERS} workers, {os.cpu_count()} CPUs; server "
          f"{url.render_as_string(hide_password=True)}{'' if configured else ' (throwaway)'}; runner {chosen.name}")
    before = count_schemas(engine)
    poller = Poller(engine, application)
    runs: list[Run] = []
    probes: list[Run] = []
    compared: list[Run] = []  # --compare: the other runner on the whole suite
    try:
        with tempfile.TemporaryDirectory(prefix="dbtestcase-parallel-") as temp:
            directory = Path(temp)
            generate(directory)
            print(HEADER)
            for number in range(1, options.rounds + 1):
                plan = [(chosen, False)]
                if number == (options.rounds + 1) // 2:  # the middle round: start-up probes, and the comparison
                    plan += [(chosen, True), (other, True)] + ([(other, False)] if options.compare else [])
                for runner, probe in plan:
                    # 1 then 2 workers in odd rounds, 2 then 1 in even ones: a drift of the machine's speed evens out
                    for workers in (1, WORKERS) if number % 2 or probe or runner is other else (WORKERS, 1):
                        run = run_suite(number, runner, workers, directory, run_url, poller, probe)
                        (probes if probe else runs if runner is chosen else compared).append(run)
                        print(describe(run, f"{number}{' probe' if probe else ''}"), flush=True)
                        if run.failed:
                            print("    " + "\n    ".join(run.output.strip().splitlines()[-25:]))
        made = sorted({log.schema for run in runs + probes + compared for log in run.processes.values()})
        leftovers = Leftovers(before, count_schemas(engine), len(made), count_schemas(engine, made))
    finally:
        poller.close()
        engine.dispose()
    print(LEGEND)
    ok = report(runs, probes, leftovers)
    if compared:
        single, multi = (next(run.seconds for run in compared if run.workers == n) for n in (1, WORKERS))
        clean = all(run.failed == 0 for run in compared)
        print(f"  for comparison, {other.name} once on the whole suite: 1 worker {single:.2f}s, {WORKERS} workers "
              f"{multi:.2f}s, speed-up {single / multi:.2f}x, per-test ratio {multi * WORKERS / single:.2f}x"
              f"{'' if clean else ' (with FAILURES)'}")
    print(f"  bench time {time.perf_counter() - started:.0f}s; all targets {'met' if ok else 'NOT met'}")
    return ok


if __name__ == "__main__":
    main(sys.argv[1:])  # a report, as bench.py's: "NOT met" is printed, and make bench goes on
