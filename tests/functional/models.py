"""The schemas the functional tests run on: a foreign key and a unique name; a deferrable FK apart."""

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


class DeferredBase(DeclarativeBase):
    """A schema of its own: MySQL/MariaDB cannot create a deferrable foreign key at all."""


class Shelf(DeferredBase):
    __tablename__ = "dbtc_shelves"
    id = Column(Integer, primary_key=True)


class Label(DeferredBase):
    """A deferrable foreign key: violations surface only at COMMIT (or SET CONSTRAINTS)."""

    __tablename__ = "dbtc_labels"
    id = Column(Integer, primary_key=True)
    shelf_id = Column(Integer, ForeignKey("dbtc_shelves.id", deferrable=True, initially="DEFERRED"), nullable=False)
