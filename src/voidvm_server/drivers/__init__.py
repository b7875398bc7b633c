"""Hypervisor drivers: the `Driver` protocol, the real QEMU driver and a fake for unit tests."""
