"""The shared part of the generated parallel suite: a 50-table ORM schema, its database, and the test body.

bench/parallel.py copies this file next to the generated test modules. The database is set up once per
worker process, by the first test class that runs there (not at import, so that a runner's main process
that only loads the tests, such as nose2's with ``-N``, opens no connection), and kept until the process
ends: dbtestcase tears it down at exit, or, where a worker ends without atexit (nose2's mp workers), the
server rolls it back when the connection drops.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar, Optional

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import dbtestcase
from dbtestcase.workers import worker_id

TABLES = 50
ROWS = 3  # children inserted by each test


class Base(DeclarativeBase):
    pass


def _model(index: int) -> type[Any]:
    """Entity<index>: a unique name, a tag (the id of the test that wrote the row), an amount, a parent in the table before."""
    attributes: dict[str, Any] = {
        "__tablename__": f"entity_{index}",
        "id": mapped_column(sa.Integer, primary_key=True),
        "name": mapped_column(sa.String(40), unique=True),  # the same names in every test: shared tables would block
        "tag": mapped_column(sa.String(200), index=True),
        "amount": mapped_column(sa.Integer, default=0),
        "__annotations__": {"id": Mapped[int], "name": Mapped[str], "tag": Mapped[str], "amount": Mapped[int]},
    }
    if index:
        attributes["parent_id"] = mapped_column(sa.ForeignKey(f"entity_{index - 1}.id"))
        attributes["parent"] = relationship(f"Entity{index - 1}")
        attributes["__annotations__"].update({"parent_id": Mapped[Optional[int]], "parent": Mapped[Optional[Any]]})
    return type(f"Entity{index}", (Base,), attributes)


MODELS = [_model(index) for index in range(TABLES)]
DATABASE = dbtestcase.TestDatabase(Base.metadata)  # set up by the first class to run in this process
_LOG = os.environ.get("PARALLEL_BENCH_LOG")


class SuiteCase(dbtestcase.DatabaseTestCase):
    """Each test fills a parent and a child table that must be empty, then checks that it sees only its own rows."""

    database = DATABASE
    _started: ClassVar[float] = 0.0
    _tests: ClassVar[int] = 0

    @classmethod
    def setUpClass(cls) -> None:
        DATABASE.setup()  # a no-op once set up; set up here, it is not owned (and torn down) by the class
        cls._started, cls._tests = time.time(), 0
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        if _LOG and cls._tests:  # who ran what, where and when: the bench checks the workers overlapped
            worker = worker_id() or "-"
            line = f"{os.getpid()} {worker} {DATABASE.schema_name} {cls._tests} {cls._started:.6f} {time.time():.6f}\n"
            with open(_LOG, "a") as log:
                log.write(line)

    def exercise(self, index: int) -> None:
        """Realistic ORM work on tables ``index - 1`` (parent) and ``index`` (children), proving isolation."""
        parent_model, child_model = MODELS[index - 1], MODELS[index]
        session, tag = self.session, self.id()
        # A blank slate: another test's rows (this worker's or another's) would show here.
        counts = session.execute(
            sa.select(sa.select(sa.func.count()).select_from(parent_model).scalar_subquery(),
                      sa.select(sa.func.count()).select_from(child_model).scalar_subquery())
        ).one()
        self.assertEqual(tuple(counts), (0, 0), f"{tag} saw rows it did not write")
        parent = parent_model(name="parent", tag=tag, amount=0)
        session.add_all([child_model(name=f"row-{n}", tag=tag, amount=n, parent=parent) for n in range(ROWS)])
        session.commit()  # stays inside this test's savepoint
        children = session.scalars(sa.select(child_model).order_by(child_model.name)).all()  # every row, not only ours
        self.assertEqual([(child.name, child.tag, child.parent.tag) for child in children],
                         [(f"row-{n}", tag, tag) for n in range(ROWS)])
        children[0].amount += 10
        session.commit()
        total = session.scalar(sa.select(sa.func.sum(child_model.amount)).where(child_model.tag == tag))
        self.assertEqual(total, 10 + sum(range(ROWS)))
        type(self)._tests += 1
