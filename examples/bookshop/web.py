"""Application code that does not take a session: a global scoped_session, as web apps have."""

from __future__ import annotations

from sqlalchemy import create_engine, select
from sqlalchemy.orm import scoped_session, selectinload, sessionmaker

from .models import Author, Book

# Bound at import time to the production database; the tests rebind it with bind_sessions.
engine = create_engine("postgresql+psycopg2://shop@db.example.invalid/shop")
Session = scoped_session(sessionmaker(bind=engine))


def publish(title: str, author_name: str) -> None:
    """Handle a request: find or create the author, add the book, commit, and end the session."""
    try:
        author = Session.scalar(select(Author).where(Author.name == author_name)) or Author(name=author_name)
        Session.add(Book(title=title, author=author))
        Session.commit()
    finally:
        Session.remove()


def catalogue() -> dict[str, list[str]]:
    """Every author's titles, loaded in two queries whatever the number of authors."""
    try:
        authors = Session.scalars(select(Author).options(selectinload(Author.books)).order_by(Author.name))
        return {author.name: sorted(book.title for book in author.books) for author in authors}
    finally:
        Session.remove()
