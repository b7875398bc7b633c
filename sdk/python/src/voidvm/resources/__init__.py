"""One module per API resource; each has a blocking and an asyncio class."""

from .auth import ApiTokens, AsyncApiTokens, AsyncAuth, Auth
from .images import AsyncImages, Images
from .operations import AsyncOperations, Operations
from .system import AsyncSystem, System
from .users import AsyncUsers, Users
from .vms import AsyncVMs, VMAction, VMs

__all__ = [
    "ApiTokens",
    "AsyncApiTokens",
    "AsyncAuth",
    "AsyncImages",
    "AsyncOperations",
    "AsyncSystem",
    "AsyncUsers",
    "AsyncVMs",
    "Auth",
    "Images",
    "Operations",
    "System",
    "Users",
    "VMAction",
    "VMs",
]
