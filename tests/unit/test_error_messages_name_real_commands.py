"""Error messages that tell the operator to run a command name one that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

import voidvm_server
from tests.conftest import Api
from voidvm_server.cli import app
from voidvm_server.domain.models import ImageFormat
from voidvm_server.errors import ValidationError
from voidvm_server.services.images import ImageSource


def server_commands() -> set[str]:
    """Every `voidvm-server …` command the CLI runs, as 'group sub' or 'cmd' (no bare groups)."""
    root = get_command(app)
    names: set[str] = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        names.update([f"{name} {sub}" for sub in subcommands] if subcommands else [name])
    return names


def runs(command_line: str) -> bool:
    """Whether `command_line` (a command and maybe its arguments) starts with a real command."""
    return any(command_line == c or command_line.startswith(f"{c} ") for c in server_commands())


async def test_a_kernel_image_import_names_the_build_tiny_command(api: Api) -> None:
    with pytest.raises(ValidationError) as caught:
        await api.container.images.import_image("k", ImageFormat.KERNEL, ImageSource(path="k"), [])
    reason = str(caught.value.details)
    named = re.findall(r"'voidvm-server ([^']+)'", reason)
    assert named == ["image build-tiny"], reason
    assert all(runs(command) for command in named)


def test_every_voidvm_server_command_quoted_in_the_source_exists() -> None:
    source = Path(voidvm_server.__file__).parent
    quoted = {
        (path.name, command)
        for path in source.rglob("*.py")
        for command in re.findall(r"'voidvm-server ([a-z][a-z -]*)'", path.read_text(encoding="utf-8"))
    }
    assert quoted, "the source quotes no voidvm-server command any more; drop this test"
    assert {(file, cmd) for file, cmd in quoted if not runs(cmd)} == set()
