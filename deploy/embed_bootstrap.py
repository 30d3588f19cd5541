#!/usr/bin/env python3
"""Copy deploy/bootstrap.sh and deploy/systemd/*.service into the template's user data.

The files are the one source of truth; the template holds each one, gzip-compressed and
base64-encoded, between heredoc lines (`base64 -d <<'VOPRD_BOOTSTRAP_SH' | gzip -dc > ...`
... `VOPRD_BOOTSTRAP_SH`, likewise `VOPRD_UNIT` and `VOPRD_BOOTSTRAP_UNIT`), and the user data
decodes them on the instance. The copies leave out whole-line comments (the shebang and
shellcheck directives stay, and every line inside a heredoc), with one line saying where the
commented file is; nothing else changes, so they behave the same. Compressed and without
comments, because EC2 refuses user data over 16 KiB and `aws cloudformation deploy` a template
over 51,200 bytes: as text the three files took 17.6 KB of the template, this way about 7.6 KB.

    python3 deploy/embed_bootstrap.py            re-embed the files that changed
    python3 deploy/embed_bootstrap.py --check    exit 1 when the template is stale (a test runs it)
    python3 deploy/embed_bootstrap.py --show     print what the template embeds, decoded

A block is rewritten only when its decoded content differs from the file, so another zlib's
different (equally valid) compression never makes the template stale.
"""

from __future__ import annotations

import base64
import gzip
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
LINE_CHARS = 76


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


def encoded_lines(text: str) -> list[str]:
    data = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()
    return [data[i : i + LINE_CHARS] + "\n" for i in range(0, len(data), LINE_CHARS)]


def _block(lines: list[str], delimiter: str) -> tuple[int, int, str]:
    """(index of the opening line, index of the closing line, indentation) of a heredoc."""
    opening = [i for i, line in enumerate(lines) if f"<<'{delimiter}'" in line]
    assert len(opening) == 1, f"expected one heredoc opening for {delimiter}, found {opening}"
    start = opening[0]
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    for end in range(start + 1, len(lines)):
        if lines[end].rstrip("\n") == indent + delimiter:
            return start, end, indent
    raise AssertionError(f"no closing line for heredoc {delimiter}")


def extract(template_text: str, delimiter: str) -> str:
    """The file the template embeds in heredoc `delimiter`, decoded as the instance does."""
    lines = template_text.splitlines(keepends=True)
    start, end, _ = _block(lines, delimiter)
    encoded = "".join(line.strip() for line in lines[start + 1 : end])
    return gzip.decompress(base64.b64decode(encoded, validate=True)).decode()


def embed(template_text: str) -> str:
    """The template with each heredoc whose decoded content differs from its file re-encoded."""
    for delimiter, path in EMBEDDED.items():
        content = embedded_text(path)
        assert content.endswith("\n"), f"{path} must end with a newline"
        lines = template_text.splitlines(keepends=True)
        start, end, indent = _block(lines, delimiter)
        try:
            if extract(template_text, delimiter) == content:
                continue
        except (ValueError, OSError, EOFError):
            pass  # not base64 or not gzip: (re)write it
        body = [indent + line for line in encoded_lines(content)]
        template_text = "".join(lines[: start + 1] + body + lines[end:])
    return template_text


def main(argv: list[str]) -> int:
    current = TEMPLATE.read_text()
    if "--show" in argv:
        for delimiter, path in EMBEDDED.items():
            print(f"==> {path.relative_to(DEPLOY.parent)} ({delimiter})")
            print(extract(current, delimiter), end="")
        return 0
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
