"""Live config changed through one API worker reaches the others (the `config` event)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.integration.conftest import poll
from voidvm_server.events.bus import EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.live_config import LiveConfigStore


@pytest.fixture
async def two_workers(database_url: str, tmp_path: Path) -> AsyncIterator[list[LiveConfigStore]]:
    settings = make_settings(tmp_path)
    setup = Database(database_url)
    await setup.migrate()
    await setup.close()
    stores, logs, dbs = [], [], []
    for _ in range(2):
        db = Database(database_url)
        log = EventLog(db, EventBus())
        await log.start()
        store = LiveConfigStore(db, settings, log)
        await store.load()
        store.start()
        stores.append(store)
        logs.append(log)
        dbs.append(db)
    try:
        yield stores
    finally:
        for store, log, db in zip(stores, logs, dbs, strict=True):
            store.stop()
            await log.close()
            await db.close()


async def test_a_change_on_one_worker_is_live_on_the_other(two_workers: list[LiveConfigStore]) -> None:
    one, two = two_workers
    await one.update({"rate_limits": {"default": "7/minute"}})

    async def followed() -> bool | None:
        return two.current.rate_limits.default == "7/minute" or None

    await poll(followed, timeout=10, what="the other worker's config")
    # A partial change on the second worker merges with the stored document, not its own copy.
    await two.update({"default_quota": {"max_vms": 3}})
    await poll(lambda: _both(one), timeout=10, what="both changes on the first worker")


async def _both(store: LiveConfigStore) -> bool | None:
    current = store.current
    return (current.rate_limits.default == "7/minute" and current.default_quota.max_vms == 3) or None
