"""The QEMU driver: one detached qemu-system process per VM, controlled over QMP."""
