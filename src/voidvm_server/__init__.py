"""VoidVM server: an API-first manager for real QEMU virtual machines."""

__version__ = "0.1.0"
API_VERSION = "v1"
