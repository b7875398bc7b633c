"""VoidVM Python SDK.

>>> from voidvm import VoidVMClient
>>> client = VoidVMClient(base_url="http://localhost:3000/api/v1", token="...")
>>> client.vms.list()  # doctest: +SKIP
"""

from ._client import AsyncVoidVMClient, VoidVMClient
from ._console import Console
from ._errors import (
    AuthenticationError,
    ConflictError,
    ConsoleStateError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    SocketClosedError,
    TransportError,
    ValidationError,
    VoidVMError,
    WaitTimeoutError,
)
from ._events import Event, EventStream, Topics, TopicSpec
from ._http import DEFAULT_BASE_URL
from ._models import (
    VM,
    ApiToken,
    ConsoleLog,
    CreatedApiToken,
    Image,
    LoginResult,
    Operation,
    Page,
    Record,
    User,
    VMMetrics,
    VMStatus,
)
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "VM",
    "ApiToken",
    "AsyncVoidVMClient",
    "AuthenticationError",
    "ConflictError",
    "Console",
    "ConsoleLog",
    "ConsoleStateError",
    "CreatedApiToken",
    "Event",
    "EventStream",
    "Image",
    "LoginResult",
    "NotFoundError",
    "Operation",
    "Page",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "Record",
    "ServerError",
    "SocketClosedError",
    "TopicSpec",
    "Topics",
    "TransportError",
    "User",
    "VMMetrics",
    "VMStatus",
    "ValidationError",
    "VoidVMClient",
    "VoidVMError",
    "WaitTimeoutError",
    "__version__",
]
