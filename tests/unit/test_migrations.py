"""Alembic migrations go up and down cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from voidvm_server.persistence.engine import downgrade, upgrade
from voidvm_server.persistence.tables import Base

TABLES = {
    "users",
    "api_tokens",
    "revoked_sessions",
    "images",
    "vms",
    "audit_log",
    "config",
    "operations",
    "events",
    "console_tickets",
    "api_workers",
    "websocket_seats",
}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


async def test_migrations_up_down_up(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    assert await _tables(database_url) == TABLES
    await asyncio.to_thread(downgrade, database_url, "base")
    assert await _tables(database_url) == set()
    await asyncio.to_thread(upgrade, database_url)
    assert await _tables(database_url) == TABLES


async def test_migrations_build_exactly_the_tables_the_code_declares(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_migration_0003_says_kernel_images_serve_no_ssh(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0002")
    engine = create_async_engine(database_url)
    insert = text(
        "INSERT INTO images (id, name, format, aliases, status, size_bytes, virtual_size_bytes, "
        "is_default, source, files, created_at) VALUES (:id, :id, :format, '[]', 'available', 0, 0, "
        "false, 'built-in', '{}', CURRENT_TIMESTAMP)"
    )
    try:
        async with engine.begin() as conn:
            for image_id, fmt in (("img-kernel", "kernel"), ("img-disk", "qcow2")):
                await conn.execute(insert, {"id": image_id, "format": fmt})
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as conn:
            serves = dict((await conn.execute(text("SELECT id, serves_ssh FROM images"))).all())
    finally:
        await engine.dispose()
    assert serves == {"img-kernel": False, "img-disk": True}
