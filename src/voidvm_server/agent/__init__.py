"""The host agent: what owns a host's QEMU processes, behind one port (port.py)."""
