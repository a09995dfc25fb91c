"""reset_sequences: put the sequences of the tables back where a test should find them."""

from __future__ import annotations

from sqlalchemy import MetaData, Sequence, text
from sqlalchemy.engine import Connection

from ..exceptions import ConfigurationError

# Sequences owned by the tables (serial and identity columns) with their current state.
_OWNED = text(
    """
    SELECT s.oid::regclass::text AS name, ps.last_value, ps.start_value
    FROM pg_depend d
    JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    JOIN pg_sequences ps ON ps.schemaname = s.relnamespace::regnamespace::text AND ps.sequencename = s.relname
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid IN (SELECT to_regclass(n) FROM unnest(CAST(:tables AS text[])) AS n)
    UNION
    SELECT s.oid::regclass::text, ps.last_value, ps.start_value
    FROM pg_class s
    JOIN pg_sequences ps ON ps.schemaname = s.relnamespace::regnamespace::text AND ps.sequencename = s.relname
    WHERE s.oid IN (SELECT to_regclass(n) FROM unnest(CAST(:sequences AS text[])) AS n)
    ORDER BY 1
    """
)


class SequenceBaseline:
    """The sequences of a schema and the value each should have when a test starts.

    ``setval`` is not undone by ROLLBACK, so the values are restored explicitly, all in one
    statement (one round trip) per test.
    """

    def __init__(self, tables: list[str], sequences: list[str]) -> None:
        self._tables, self._sequences = tables, sequences
        self._restore_sql = ""

    @classmethod
    def of(cls, connection: Connection, metadata: MetaData) -> SequenceBaseline:
        """The sequences of ``metadata``'s tables, at their start values.

        Raises:
            ConfigurationError: the database is not PostgreSQL.
        """
        if connection.dialect.name == "sqlite":
            return cls([], [])  # SQLite's counters (sqlite_sequence, max(rowid)) roll back with the rows
        if connection.dialect.name != "postgresql":
            raise ConfigurationError(
                f"reset_sequences works on PostgreSQL and SQLite; {connection.dialect.name} never rolls back its "
                "AUTO_INCREMENT counters and resetting them is DDL, which commits: remove reset_sequences = True "
                "and compare rows by value rather than by id."
            )
        preparer = connection.dialect.identifier_preparer
        tables = [preparer.format_table(table) for table in metadata.sorted_tables]
        sequences = [
            preparer.format_sequence(column.default)
            for table in metadata.sorted_tables
            for column in table.columns
            if isinstance(column.default, Sequence)
        ]
        baseline = cls(tables, sequences)
        baseline.capture(connection, at_start=True)
        return baseline

    def capture(self, connection: Connection, *, at_start: bool = False) -> None:
        """Remember the current values (or the start values) as what each test starts from."""
        if not self._tables and not self._sequences:
            return
        rows = connection.execute(_OWNED, {"tables": self._tables, "sequences": self._sequences}).all()
        calls = []
        for name, last_value, start_value in rows:
            literal = "'" + name.replace("'", "''") + "'"
            if at_start or last_value is None:
                calls.append(f"setval({literal}, {start_value}, false)")
            else:
                calls.append(f"setval({literal}, {last_value}, true)")
        self._restore_sql = f"SELECT {', '.join(calls)}" if calls else ""

    def restore(self, connection: Connection) -> None:
        """Set every sequence to its remembered value."""
        if self._restore_sql:
            connection.exec_driver_sql(self._restore_sql)
