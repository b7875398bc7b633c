"""Resource ids: a short type prefix and random hex, safe to use as a file name."""

from __future__ import annotations

import re
import secrets

ID_PATTERN = re.compile(r"^[a-z]{2,3}-[0-9a-f]{12}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
