"""Put many VM rows straight into a server's SQLite database (for list benchmarks).

The rows are what `POST /vms` would leave behind for a stopped VM (no disk files: listing never
touches them). SQLite in WAL mode lets us write while the server runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select

from voidvm_server.persistence.tables import UserRow, VMRow
from voidvm_server.services.ids import new_id

BATCH = 1000


def seed_vms(db_path: Path, count: int, image_id: str, owner: str = "admin", prefix: str = "seed") -> int:
    """Insert `count` stopped VMs owned by `owner`; returns how many VMs the table then holds."""
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            owner_id = conn.scalar(select(UserRow.id).where(UserRow.username == owner))
            assert owner_id, f"no user {owner}"
            start = datetime.now(UTC) - timedelta(days=30)
            rows = []
            for i in range(count):
                stamp = start + timedelta(seconds=i)
                rows.append(
                    {
                        "id": new_id("vm"),
                        "name": f"{prefix}-{i:05d}",
                        "description": "seeded for a benchmark",
                        "status": "stopped",
                        "status_reason": None,
                        "cpu": 1,
                        "memory_mb": 128,
                        "disk_gb": 1,
                        "os": "tiny",
                        "image_id": image_id,
                        "owner_id": owner_id,
                        "ssh_port": None,
                        "pid": None,
                        "created_at": stamp,
                        "updated_at": stamp,
                        "started_at": None,
                    }
                )
                if len(rows) == BATCH:
                    conn.execute(insert(VMRow), rows)
                    rows = []
            if rows:
                conn.execute(insert(VMRow), rows)
            return int(conn.scalar(select(func.count()).select_from(VMRow)) or 0)
    finally:
        engine.dispose()
