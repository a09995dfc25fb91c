"""bind_sessions with Flask-SQLAlchemy 3: db.session, Model.query and test-client requests that commit."""

from __future__ import annotations

import tempfile
import unittest

import sqlalchemy as sa

import dbtestcase
from dbtestcase.core import SessionBinding

try:
    from flask import Flask, jsonify, request
    from flask_sqlalchemy import SQLAlchemy
except ImportError:  # an optional test dependency
    raise unittest.SkipTest("Flask-SQLAlchemy is not installed") from None

db = SQLAlchemy()


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "dbtc_flask_notes"
    id = db.Column(db.Integer, primary_key=True)
    text = db.Column(db.String(100), nullable=False)


def create_app(url: str) -> Flask:
    """The application under test: its views use db.session and Note.query, and commit."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, TESTING=True)
    db.init_app(app)

    @app.post("/notes")
    def add_note() -> tuple[str, int]:
        db.session.add(Note(text=request.form["text"]))
        db.session.commit()
        return "", 201

    @app.get("/notes")
    def list_notes() -> object:
        return jsonify([note.text for note in Note.query.order_by(Note.id)])

    return app


app: Flask


def setUpModule() -> None:
    global app
    database = dbtestcase.setup_module(db.metadata)
    app = create_app(database.url.render_as_string(hide_password=False))


def tearDownModule() -> None:
    dbtestcase.teardown_module()


class FlaskSQLAlchemy(dbtestcase.DatabaseTestCase):
    bind_sessions = [db.session]

    def test_a_request_that_commits(self) -> None:
        """A request that commits through db.session is seen by the next request and by the test..."""
        client = app.test_client()
        self.assertEqual(client.post("/notes", data={"text": "one"}).status_code, 201)
        self.assertEqual(client.post("/notes", data={"text": "two"}).status_code, 201)
        self.assertEqual(client.get("/notes").get_json(), ["one", "two"])
        self.assertRowCount(Note, 2)

    def test_b_gone_in_the_next_test(self) -> None:
        """...and gone in the next test."""
        self.assertEqual(app.test_client().get("/notes").get_json(), [])
        self.assertRowCount(Note, 0)

    def test_c_model_query_in_an_app_context(self) -> None:
        """db.session and Model.query in the test's own app context run on the test's connection."""
        with app.app_context():
            db.session.add(Note(text="here"))
            db.session.commit()
            self.assertEqual(Note.query.count(), 1)
            self.assertIs(db.session.get_bind(), self.connection)
            self.assertEqual(db.session.scalar(sa.select(Note.text)), "here")
            db.session.rollback()  # undoes nothing committed: the test's savepoint is the app's transaction
            self.assertEqual(Note.query.count(), 1)
        self.assertRowCount(Note, 1)


class Restored(dbtestcase.DatabaseTestCase):
    def test_factory_restored(self) -> None:
        """After the bound tests, db.session makes Flask-SQLAlchemy's own sessions on the app's engine."""
        maker = db.session.session_factory
        self.assertIsNone(maker.kw["bind"], "Flask-SQLAlchemy's own setting")
        self.assertNotIn("join_transaction_mode", maker.kw)
        self.assertIs(maker.class_.get_bind, maker.class_.__mro__[1].get_bind)
        with app.app_context():
            self.assertIsNot(db.session.get_bind(), self.connection)
            self.assertEqual(db.session.get_bind(), db.engine)


class WrongDatabase(dbtestcase.DatabaseTestCase):
    def test_an_app_on_another_database_is_reported(self) -> None:
        """An app whose SQLALCHEMY_DATABASE_URI is not the test database fails the test, naming both."""
        with tempfile.TemporaryDirectory() as tmp:
            other = Flask("other")
            other.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp}/production.db", TESTING=True)
            db.init_app(other)
            binding = SessionBinding([db.session], self.connection)
            message = (
                rf"^the Flask app's SQLALCHEMY_DATABASE_URI is sqlite:///{tmp}/production.db, not the test database "
                r".+: db.engine and db.create_all\(\) would reach another database\. Create the app with "
                r"SQLALCHEMY_DATABASE_URI set to the test database's URL"
            )
            try:
                with other.app_context(), self.assertRaisesRegex(dbtestcase.ConfigurationError, message):
                    db.session.add(Note(text="lost"))
            finally:
                with self.assertRaisesRegex(dbtestcase.ConfigurationError, message):
                    binding.restore()  # reported again at the end, had a request handler swallowed it
            self.assertIsNone(db.session.session_factory.kw["bind"])

    def test_the_password_is_not_shown(self) -> None:
        """The app's URL is shown masked."""
        other = Flask("secret")
        other.config.update(SQLALCHEMY_DATABASE_URI="postgresql://app:s3cret@db.example/prod", TESTING=True)
        db.init_app(other)
        binding = SessionBinding([db.session], self.connection)
        with other.app_context(), self.assertRaises(dbtestcase.ConfigurationError) as caught:
            db.session()
        with self.assertRaises(dbtestcase.ConfigurationError):
            binding.restore()
        self.assertIn("postgresql://app:***@db.example/prod", str(caught.exception))
        self.assertNotIn("s3cret", str(caught.exception))
