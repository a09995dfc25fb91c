"""The schema the functional tests run on: a foreign key, a unique name, a deferrable FK."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "dbtc_authors"
    id = Column(Integer, primary_key=True)
    name = Column(String(80), unique=True, nullable=False)
    books = relationship("Book", back_populates="author")


class Book(Base):
    __tablename__ = "dbtc_books"
    id = Column(Integer, primary_key=True)
    title = Column(String(200), nullable=False)
    author_id = Column(Integer, ForeignKey("dbtc_authors.id"), nullable=False)
    author = relationship("Author", back_populates="books")


class Review(Base):
    """A deferrable foreign key: violations surface only at COMMIT (or SET CONSTRAINTS)."""

    __tablename__ = "dbtc_reviews"
    id = Column(Integer, primary_key=True)
    book_id = Column(Integer, ForeignKey("dbtc_books.id", deferrable=True, initially="DEFERRED"), nullable=False)
    stars = Column(Integer, nullable=False)
