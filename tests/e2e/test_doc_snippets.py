"""Every code block of the READMEs and of docs/ that is marked runnable, run against a real server.

A block is marked by an HTML comment on the line right before its opening fence: `<!-- runnable -->`
or `<!-- not-runnable: reason -->` (docs/architecture.md, "Documentation snippets are tested"). Every
block of the three READMEs must carry one of the two, so no new snippet slips through unrun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, ServerProcess

READMES = [ROOT / "README.md", ROOT / "sdk/python/README.md", ROOT / "sdk/typescript/README.md"]
DOCS = [*READMES, *sorted((ROOT / "docs").glob("*.md"))]
SDK_TS = ROOT / "sdk/typescript"

SHELL, PYTHON, TYPESCRIPT, JAVASCRIPT = "shell", "python", "typescript", "javascript"
LANGUAGES = {
    "bash": SHELL, "sh": SHELL, "shell": SHELL, "python": PYTHON, "py": PYTHON,
    "ts": TYPESCRIPT, "typescript": TYPESCRIPT, "js": JAVASCRIPT, "javascript": JAVASCRIPT,
}  # fmt: skip
BLOCK_TIMEOUT = 900  # seconds; a block boots at most a few tiny guests under tcg

FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
RUNNABLE = re.compile(r"^\s*<!--\s*runnable\s*-->\s*$")
NOT_RUNNABLE = re.compile(r"^\s*<!--\s*not-runnable:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "bash"
    code: str
    mark: str | None  # "runnable", "not-runnable", or None when unmarked
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def language(self) -> str | None:
        words = self.info.split()
        return LANGUAGES.get(words[0].lower()) if words else None


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file (CommonMark fences: ``` or ~~~, a closing fence at
    least as long as the opening one), each with the mark on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((i for i in range(index + 1, len(lines)) if closing.match(lines[i])), len(lines))
        before = lines[index - 1] if index else ""
        not_runnable = NOT_RUNNABLE.match(before)
        mark = "runnable" if RUNNABLE.match(before) else "not-runnable" if not_runnable else None
        reason = not_runnable["reason"] if not_runnable else ""
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(path, index + 1, opening["info"].strip(), code, mark, reason))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in read_blocks(doc)]
RUNNABLE_BLOCKS = [block for block in ALL_BLOCKS if block.mark == "runnable"]


def test_every_readme_block_is_marked_runnable_or_not_runnable_with_a_reason() -> None:
    readme_blocks = [block for block in ALL_BLOCKS if block.path in READMES]
    assert len(readme_blocks) >= 20
    unmarked = [block.name for block in readme_blocks if block.mark is None]
    assert unmarked == [], "mark these with <!-- runnable --> or <!-- not-runnable: reason -->"
    assert [block.name for block in ALL_BLOCKS if block.mark == "not-runnable" and not block.reason] == []


def test_runnable_blocks_are_in_a_language_the_test_runs() -> None:
    assert len(RUNNABLE_BLOCKS) >= 15
    assert [(block.name, block.info) for block in RUNNABLE_BLOCKS if block.language is None] == []
    assert {SHELL, PYTHON, TYPESCRIPT} <= {block.language for block in RUNNABLE_BLOCKS}


def test_the_block_reader_follows_commonmark_fences(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- runnable -->\n```bash\necho one\n```\n\n"
        "````markdown\n<!-- runnable -->\n```bash\nnot a block of its own\n```\n````\n"
        "<!-- not-runnable: needs a file -->\n~~~python\nopen('x')\n~~~\n```sh\nunmarked\n```\n"
    )
    found = [(b.line, b.info, b.mark, b.reason, b.code) for b in read_blocks(doc)]
    assert found == [
        (2, "bash", "runnable", "", "echo one\n"),
        (6, "markdown", None, "", "<!-- runnable -->\n```bash\nnot a block of its own\n```\n"),
        (13, "python", "not-runnable", "needs a file", "open('x')\n"),
        (16, "sh", None, "", "unmarked\n"),
    ]


def rewrite(code: str, server: ServerProcess, token: str) -> str:
    """Point a block at the test server and give it a real token in place of the placeholders."""
    ws_root = server.root_url.replace("http://", "ws://", 1)
    code = code.replace("http://localhost:3000", server.root_url).replace("ws://localhost:3000", ws_root)
    code = code.replace("<your-token>", token).replace('token="..."', f"token={json.dumps(token)}")
    return code.replace("'your-jwt-token'", json.dumps(token))


def working_dir(block: Block) -> Path:
    """SDK READMEs' shell blocks run in the SDK's directory, every other block in the repository."""
    return block.path.parent if block.path.parent.parent == ROOT / "sdk" else ROOT


def vm_ids(server: ServerProcess, token: str) -> set[str]:
    answer = httpx.get(f"{server.base_url}/vms?limit=100", headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    return {vm["id"] for vm in answer.json()["data"]["vms"]}


def command_for(block: Block, code: str, work: Path) -> list[str]:
    if block.language == SHELL:
        script = work / "block.sh"
        script.write_text(code)
        return ["bash", "-euo", "pipefail", str(script)]
    if block.language == PYTHON:
        script = work / "block.py"
        script.write_text(code)
        return [sys.executable, str(script)]
    return node_command(block, code, work)


def node_command(block: Block, code: str, work: Path) -> list[str]:
    """TypeScript is compiled by tsc, as the seed's snippet is; both run inside the SDK package so
    that `@void-vm/sdk` resolves to its build (the package's own name, through its `exports`)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (SDK_TS / "dist").exists() or not (SDK_TS / "node_modules").exists():
        pytest.fail("build the TypeScript SDK first (make sdk-ts, part of make test)")
    source_dir = SDK_TS / f".doc-snippets-{os.getpid()}"
    shutil.rmtree(source_dir, ignore_errors=True)
    source_dir.mkdir()
    if block.language == JAVASCRIPT:
        (source_dir / "block.mjs").write_text(code)
        return ["node", str(source_dir / "block.mjs")]
    (source_dir / "block.mts").write_text(code)
    tsc = subprocess.run(
        [str(SDK_TS / "node_modules/.bin/tsc"), "--module", "nodenext", "--moduleResolution", "nodenext",
         "--target", "es2022", "--strict", "--skipLibCheck", "--rootDir", str(source_dir),
         "--outDir", str(source_dir / "out"), str(source_dir / "block.mts")],
        cwd=SDK_TS, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tsc.returncode == 0, f"{block.name} does not compile:\n{tsc.stdout}{tsc.stderr}"
    return ["node", str(source_dir / "out/block.mjs")]


@pytest.mark.qemu
@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=[block.name for block in RUNNABLE_BLOCKS])
def test_runnable_block_exits_0_against_a_real_server(
    block: Block, local_server: ServerProcess, tmp_path: Path
) -> None:
    token = local_server.login()
    before = vm_ids(local_server, token)
    env = {
        **os.environ,
        "TOKEN": token,
        "VOIDVM_URL": local_server.root_url,
        "VOIDVM_TOKEN": token,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        command = command_for(block, rewrite(block.code, local_server, token), tmp_path)
        cwd = SDK_TS if block.language in (TYPESCRIPT, JAVASCRIPT) else working_dir(block)
        run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    finally:
        shutil.rmtree(SDK_TS / f".doc-snippets-{os.getpid()}", ignore_errors=True)
        left = vm_ids(local_server, token) - before
        for vm_id in sorted(left):
            httpx.delete(f"{local_server.base_url}/vms/{vm_id}?force=true",
                         headers={"Authorization": f"Bearer {token}"}, timeout=120)  # fmt: skip
    assert run.returncode == 0, (
        f"{block.name} ({block.info}) exited {run.returncode}\n--- stdout ---\n{run.stdout[-3000:]}"
        f"\n--- stderr ---\n{run.stderr[-3000:]}\n--- server log ---\n{local_server.log_tail(1500)}"
    )
