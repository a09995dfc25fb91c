"""A Flask + Flask-SQLAlchemy 3 application: views that use db.session and Model.query, and commit."""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class Wish(db.Model):
    __tablename__ = "wishes"

    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False, unique=True)


def create_app(database_url: str) -> Flask:
    """The app factory, as Flask recommends: the tests pass the test database's URL."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url)
    db.init_app(app)

    @app.post("/wishes")
    def add_wish():
        db.session.add(Wish(title=request.form["title"]))
        db.session.commit()
        return {"count": Wish.query.count()}, 201

    @app.get("/wishes")
    def list_wishes():
        return jsonify([wish.title for wish in Wish.query.order_by(Wish.title)])

    return app
