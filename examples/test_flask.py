"""Testing a Flask-SQLAlchemy 3 application: db.session, Model.query and requests that commit.

- ``bind_sessions = [db.session]``: Flask-SQLAlchemy's scoped session runs on the test's connection
  and savepoint, in the test's app contexts and in the requests of Flask's test client;
- the app is created with the test database's URL, so ``db.engine`` is the test database too (an
  app on another database is reported, not silently tested).
"""

from __future__ import annotations

import unittest

import dbtestcase

try:
    from flaskshop import Wish, create_app, db
except ImportError:  # Flask-SQLAlchemy is optional
    raise unittest.SkipTest("Flask-SQLAlchemy is not installed") from None

app = None


def setUpModule():
    global app
    database = dbtestcase.setup_module(db.metadata)
    app = create_app(database.url.render_as_string(hide_password=False))
    app.testing = True  # errors in views reach the test instead of becoming 500 responses


def tearDownModule():
    dbtestcase.teardown_module()


class WishListTests(dbtestcase.DatabaseTestCase):
    bind_sessions = [db.session]

    def setUp(self):
        self.client = app.test_client()

    def test_a_request_commits(self):
        """The view commits; the next request and the test both see the row."""
        response = self.client.post("/wishes", data={"title": "Dune"})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(self.client.get("/wishes").get_json(), ["Dune"])
        self.assertRowCount(Wish, 1)

    def test_b_blank_slate(self):
        """What test_a committed is gone."""
        self.assertEqual(self.client.get("/wishes").get_json(), [])

    def test_model_query_in_the_test(self):
        """db.session and Wish.query work in the test's own app context, on the same savepoint."""
        with app.app_context():
            db.session.add(Wish(title="Emma"))
            db.session.commit()
            self.assertEqual(Wish.query.count(), 1)
        self.assertEqual(self.client.post("/wishes", data={"title": "Ulysses"}).get_json(), {"count": 2})


if __name__ == "__main__":
    unittest.main()
