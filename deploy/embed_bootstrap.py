#!/usr/bin/env python3
"""Copy deploy/bootstrap.sh and deploy/systemd/*.service into the template's user data.

The files are the one source of truth; the template holds a copy of each between its
heredoc lines (`<<'VOPRD_BOOTSTRAP_SH'` ... `VOPRD_BOOTSTRAP_SH`, `<<'VOPRD_UNIT'` ...
`VOPRD_UNIT`, `<<'VOPRD_BOOTSTRAP_UNIT'` ... `VOPRD_BOOTSTRAP_UNIT`). Run
`python3 deploy/embed_bootstrap.py` after editing any of them;
`--check` exits 1 when the template is stale (tests/test_deploy_template.py runs the check).

The copies leave out whole-line comments (the shebang and shellcheck directives stay), with one
line saying where the commented file is: EC2 refuses user data over 16 KiB, and the three files
with their comments are larger than that. Nothing else changes, so they behave the same.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
TEMPLATE = DEPLOY / "cloudformation.yaml"
# heredoc delimiter -> file embedded between its opening and closing lines
EMBEDDED: dict[str, Path] = {
    "VOPRD_BOOTSTRAP_SH": DEPLOY / "bootstrap.sh",
    "VOPRD_UNIT": DEPLOY / "systemd" / "voprd.service",
    "VOPRD_BOOTSTRAP_UNIT": DEPLOY / "systemd" / "voprd-bootstrap.service",
}


HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")


def embedded_text(path: Path) -> str:
    """The copy of `path` the user data carries: `path` without its whole-line comments. Lines
    inside a shell heredoc are data, not comments: they are kept whatever they start with."""
    kept: list[str] = []
    terminator: str | None = None
    for line in path.read_text().splitlines(keepends=True):
        if terminator is not None:
            kept.append(line)
            if line.strip() == terminator:
                terminator = None
            continue
        stripped = line.lstrip()
        if stripped.startswith("#") and not line.startswith("#!") and not stripped.startswith(
            "# shellcheck "
        ):
            continue
        kept.append(line)
        opened = HEREDOC.search(line)
        if opened is not None and path.suffix == ".sh":
            terminator = opened[1]
    assert terminator is None, f"{path}: heredoc {terminator} is never closed"
    where = path.relative_to(DEPLOY)
    note = f"# Comments left out (EC2's 16 KiB user data limit): deploy/{where}\n"
    at = 1 if kept and kept[0].startswith("#!") else 0
    return "".join([*kept[:at], note, *kept[at:]])


def _block(lines: list[str], delimiter: str) -> tuple[int, int, str]:
    """(index of the opening line, index of the closing line, indentation) of a heredoc."""
    opening = [i for i, line in enumerate(lines) if line.rstrip().endswith(f"<<'{delimiter}'")]
    assert len(opening) == 1, f"expected one heredoc opening for {delimiter}, found {opening}"
    start = opening[0]
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    for end in range(start + 1, len(lines)):
        if lines[end].rstrip("\n") == indent + delimiter:
            return start, end, indent
    raise AssertionError(f"no closing line for heredoc {delimiter}")


def extract(template_text: str, delimiter: str) -> str:
    """The text the template embeds in heredoc `delimiter`, unindented (as the shell sees it)."""
    lines = template_text.splitlines(keepends=True)
    start, end, indent = _block(lines, delimiter)
    body = lines[start + 1 : end]
    return "".join(line[len(indent) :] if line.strip() else line.lstrip(" ") for line in body)


def embed(template_text: str) -> str:
    """The template with each heredoc's body replaced by its file's current content."""
    for delimiter, path in EMBEDDED.items():
        assert path.read_text().endswith("\n"), f"{path} must end with a newline"
        content = embedded_text(path)
        assert f"\n{delimiter}\n" not in f"\n{content}", f"{path} contains {delimiter} alone"
        lines = template_text.splitlines(keepends=True)
        start, end, indent = _block(lines, delimiter)
        body = [indent + line if line.strip() else "\n" for line in content.splitlines(True)]
        template_text = "".join(lines[: start + 1] + body + lines[end:])
    return template_text


def main(argv: list[str]) -> int:
    current = TEMPLATE.read_text()
    wanted = embed(current)
    if "--check" in argv:
        if wanted != current:
            print(f"{TEMPLATE} is stale: run python3 deploy/embed_bootstrap.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        TEMPLATE.write_text(wanted)
        print(f"updated {TEMPLATE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
