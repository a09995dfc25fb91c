"""Async application code: services that take an AsyncSession and commit, as asyncio web apps do."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Author, Book


async def publish(session: AsyncSession, title: str, author_name: str) -> Book:
    """Find or create the author, add the book, commit."""
    author = await session.scalar(select(Author).where(Author.name == author_name)) or Author(name=author_name)
    book = Book(title=title, author=author)
    session.add(book)
    await session.commit()
    return book


async def count_books(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(Book)) or 0
