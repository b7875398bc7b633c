"""Keep credentials in WebSocket URLs out of the logs.

uvicorn logs every WebSocket handshake with its query string (`"WebSocket /ws?token=…" [accepted]`
on `uvicorn.error`, and `uvicorn.access` lines for HTTP). This filter rewrites the values of
`token`, `ticket`, `access_token` and `refresh_token` to `[redacted]` before anything is written.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAM = re.compile(r"([?&](?:token|ticket|access_token|refresh_token)=)[^&\s\"']*", re.IGNORECASE)
LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    return SECRET_PARAM.sub(r"\1[redacted]", text)


class RedactQuerySecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Attach the filter to uvicorn's loggers (once, however many apps are created)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(RedactQuerySecrets())
