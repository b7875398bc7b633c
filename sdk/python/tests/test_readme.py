"""The README stays true: its Python blocks compile and its exit-code table matches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voidvm.cli import ExitCode

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_compile(index: int) -> None:
    compile(PYTHON_BLOCKS[index], f"README.md[python block {index}]", "exec")


def test_quick_start_is_the_seed_snippet() -> None:
    seed_test = (README.parent / "tests" / "test_seed_snippet.py").read_text(encoding="utf-8")
    quick_start = PYTHON_BLOCKS[0].replace("token='your-jwt-token'", "token=E2E_TOKEN")
    snippet_lines = [line.strip() for line in quick_start.splitlines() if line.strip()]
    test_lines = [line.strip() for line in seed_test.splitlines()]
    start = test_lines.index(snippet_lines[0])
    assert [line for line in test_lines[start:] if line][: len(snippet_lines)] == snippet_lines


def test_exit_code_table_matches_the_cli() -> None:
    table = TEXT.split("**Exit codes**", 1)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
