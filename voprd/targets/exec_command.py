"""The `--exec` command: its template, its program, and the environment its process gets.

`--exec` is split like a shell would split it (shlex, no shell runs it). Words may hold the
placeholders `{seed}`, `{count}` and `{verbose}` (`-v` for a `--once -v` replay, else nothing; a
word that ends up empty is dropped). A json-lines command without any placeholder gets voprd's
classic arguments appended: `--json --seed S -n B` (and `-v` for a verbose replay). An exit-code
command must say where the seed goes. Everything is checked before anything runs, so a command that
cannot work is refused at start with one line naming `--exec`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import string
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

ExecProtocol = Literal["json-lines", "exit-code"]
EXEC_PROTOCOLS: tuple[ExecProtocol, ...] = ("json-lines", "exit-code")
PLACEHOLDERS = ("seed", "count", "verbose")
# What the child inherits from voprd's environment, besides the names given with --exec-env.
INHERITED_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
STATE_DIR_ENV = "VOPRD_STATE_DIR"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAMPLE = {"seed": 0, "count": 1, "verbose": "-v"}


class ExecCommandError(ValueError):
    """The command cannot work; the message starts with the flag it is about (`--exec: ...`)."""


def check_env_name(name: str) -> str:
    """An --exec-env NAME, checked (the value comes from voprd's own environment)."""
    if "=" in name:
        raise ExecCommandError(
            f"--exec-env: give a NAME, not {name!r}: the value is taken from voprd's environment"
        )
    if not _ENV_NAME.fullmatch(name):
        raise ExecCommandError(f"--exec-env: {name!r} is not an environment variable name")
    return name


def child_environment(
    state_dir: str, passed: Sequence[str], source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's whole environment: PATH, HOME, LANG, TMPDIR (those set), VOPRD_STATE_DIR, and
    the --exec-env names set in voprd's environment. Nothing else: not the daemon's AWS settings."""
    environ = os.environ if source is None else source
    env = {name: environ[name] for name in (*INHERITED_ENV, *passed) if name in environ}
    env.setdefault("PATH", os.defpath)
    env[STATE_DIR_ENV] = state_dir
    return env


class _Word(msgspec.Struct, frozen=True):
    text: str
    placeholders: tuple[str, ...]


class ExecCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed, checked `--exec` template for one protocol."""

    template: str
    protocol: ExecProtocol
    words: tuple[_Word, ...]
    appends_classic_args: bool

    @property
    def program(self) -> str:
        return self.words[0].text

    @property
    def one_seed_per_process(self) -> bool:
        """An exit-code command, or a templated json-lines command without {count}."""
        if self.protocol == "exit-code":
            return True
        used = {name for word in self.words for name in word.placeholders}
        return not self.appends_classic_args and "count" not in used

    def argv(self, seed: int, count: int, verbose: bool = False) -> list[str]:
        """The command line for seeds seed..seed+count-1."""
        assert seed >= 0 and count >= 1
        values = {"seed": seed, "count": count, "verbose": "-v" if verbose else ""}
        argv = []
        for word in self.words:
            text = word.text.format(**values) if word.placeholders else _unescape(word.text)
            if text or not word.placeholders:
                argv.append(text)
        if self.appends_classic_args:
            argv += ["--json", "--seed", str(seed), "-n", str(count)]
            if verbose:
                argv.append("-v")
        return argv

    def display(self, seed: int, count: int, verbose: bool = False) -> str:
        return shlex.join(self.argv(seed, count, verbose))


def _unescape(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def _parse_word(word: str) -> _Word:
    try:
        fields = list(string.Formatter().parse(word))
    except ValueError as exc:  # a lone '{' or '}'
        raise ExecCommandError(
            f"--exec: bad braces in {word!r} ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    names: list[str] = []
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            raise ExecCommandError(
                f"--exec: unknown placeholder {{{name}}} in {word!r}; the placeholders are "
                + ", ".join(f"{{{known}}}" for known in PLACEHOLDERS)
            )
        if conversion:
            raise ExecCommandError(f"--exec: {{{name}!{conversion}}} in {word!r}: no conversions")
        try:
            format(_SAMPLE[name], spec or "")
        except ValueError as exc:
            raise ExecCommandError(f"--exec: bad format {{{name}:{spec}}} in {word!r}: {exc}"
                                   ) from None
        names.append(name)
    return _Word(word, tuple(names))


def parse_command(template: str, protocol: str = "json-lines") -> ExecCommand:
    """Split and check `template`; raises ExecCommandError (not yet whether the program exists)."""
    if protocol not in EXEC_PROTOCOLS:
        raise ExecCommandError(f"--exec-protocol: {protocol!r} is not one of "
                               + ", ".join(EXEC_PROTOCOLS))
    try:
        split = shlex.split(template)
    except ValueError as exc:
        raise ExecCommandError(f"--exec: cannot split {template!r}: {exc}") from None
    if not split:
        raise ExecCommandError("--exec: the command is empty")
    words = tuple(_parse_word(word) for word in split)
    if words[0].placeholders:
        raise ExecCommandError(f"--exec: the program name {split[0]!r} cannot hold a placeholder")
    used = {name for word in words for name in word.placeholders}
    templated = bool(used)
    if protocol == "exit-code" and "seed" not in used:
        raise ExecCommandError(
            "--exec: with --exec-protocol exit-code the command must say where the seed goes, "
            f"e.g. '{template} {{seed}}'"
        )
    if templated and "seed" not in used:
        raise ExecCommandError(
            f"--exec: the template {template!r} has placeholders but no {{seed}}"
        )
    return ExecCommand(
        template=template, protocol=protocol, words=words,
        appends_classic_args=protocol == "json-lines" and not templated,
    )


def resolve_program(program: str, path: str | None = None) -> str:
    """The executable `program` names, found as the OS would (PATH unless it holds a '/');
    raises ExecCommandError when there is none or it is not executable."""
    if "/" in program:
        if not os.path.exists(program):
            raise ExecCommandError(f"--exec: no such program {program!r}")
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise ExecCommandError(f"--exec: {program!r} is not an executable file")
        return program
    search = os.environ.get("PATH", os.defpath) if path is None else path
    found = shutil.which(program, path=search)
    if found is None:
        raise ExecCommandError(f"--exec: program {program!r} not found on PATH ({search})")
    return found


def check_command(
    template: str | None, protocol: str, env_names: Sequence[str] = ()
) -> ExecCommand:
    """Everything voprd can check before running: the template, the program, the --exec-env
    names. Raises ExecCommandError with one line naming the flag."""
    if not template:
        raise ExecCommandError("--exec: --target exec needs a command (--exec CMD)")
    for name in env_names:
        check_env_name(name)
    command = parse_command(template, protocol)
    resolve_program(command.program)
    return command
