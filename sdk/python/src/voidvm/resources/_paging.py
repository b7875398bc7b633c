"""Paginated listings: parse one page, decide whether there is another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .._models import Page

__all__ = ["PAGE_SIZE", "has_more", "page_parser"]

T = TypeVar("T")

#: The server's maximum ``limit``; automatic paging uses it to make as few requests as possible.
PAGE_SIZE = 100


def page_parser(key: str, item: Callable[[Any], T]) -> Callable[[Any], Page[T]]:
    """Parse ``data: {<key>: [...], pagination: {page, limit, total, pages}}``."""

    def parse(data: Any) -> Page[T]:
        items = [item(entry) for entry in (data or {}).get(key) or []]
        pagination = (data or {}).get("pagination") or {}
        return Page(
            items=items,
            page=int(pagination.get("page", 1)),
            limit=int(pagination.get("limit", len(items))),
            total=int(pagination.get("total", len(items))),
            pages=int(pagination.get("pages", 1)),
        )

    return parse


def has_more(page: Page[Any]) -> bool:
    """True when another page should be fetched (an empty page always ends the walk)."""
    return page.has_next and bool(page.items)
