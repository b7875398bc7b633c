"""The ``voidvm`` command-line interface (typer + rich)."""

from ._exit_codes import ExitCode
from ._state import CliDeps
from .app import main, make_app

__all__ = ["CliDeps", "ExitCode", "main", "make_app"]
