"""The code under test: it takes a Session and commits, as application code does."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Author, Book


def add_book(session: Session, title: str, author_name: str) -> Book:
    """Add a book, creating its author on first use, and commit."""
    author = session.scalar(select(Author).where(Author.name == author_name))
    if author is None:
        author = Author(name=author_name)
        session.add(author)
    book = Book(title=title, author=author)
    session.add(book)
    session.commit()
    return book


def titles_by(session: Session, author_name: str) -> list[str]:
    """The titles of an author's books, sorted."""
    query = select(Book.title).join(Book.author).where(Author.name == author_name).order_by(Book.title)
    return list(session.scalars(query))


def rename_author(session: Session, old_name: str, new_name: str) -> None:
    """Rename an author and commit; raises LookupError if there is no such author."""
    author = session.scalar(select(Author).where(Author.name == old_name))
    if author is None:
        raise LookupError(f"no author named {old_name!r}")
    author.name = new_name
    session.commit()
