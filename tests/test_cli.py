"""The command line: subcommands, one-line errors with suggestions, flags refused where they do
nothing, the flat VOPR-compatible form, fresh bounded runs, the progress line on a terminal."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voprd import cli
from voprd.events import FingerprintCount
from voprd.options import RunOptions
from voprd.service.live import Snapshot, describe, duration, terminal_renderer
from voprd.sim.run import run_seed
from voprd.systems.vsr import VSR

ROOT = Path(__file__).resolve().parent.parent
# Generous: these are correctness checks; a loaded machine may be slow (no timing asserted).
TIMEOUT_S = 300


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: scratch directories under tmp_path, no state dir or bucket."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VOPRD_") and k != "STATE_DIRECTORY"}
    env.update(TMPDIR=str(tmp_path), HOME=str(tmp_path / "home"), XDG_STATE_HOME="",
               AWS_REGION="", **extra)
    return env


def voprd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voprd", *args], cwd=ROOT,
                          env=env_for(tmp_path, **env), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# --- subcommands and errors ---------------------------------------------------------------------

def test_bare_voprd_lists_the_commands_and_exits_2(tmp_path: Path) -> None:
    proc = voprd(tmp_path)
    assert proc.returncode == 2
    for command in cli.COMMANDS:
        assert re.search(rf"^  {command} ", proc.stderr, flags=re.MULTILINE), command


def test_help_lists_the_commands_and_exits_0(tmp_path: Path) -> None:
    proc = voprd(tmp_path, "--help")
    assert proc.returncode == 0
    assert all(command in proc.stdout for command in cli.COMMANDS)


@pytest.mark.parametrize(("word", "suggestion"), [
    ("statsu", "status"), ("rnu", "run"), ("replya", "replay"), ("deamon", "daemon"),
    ("selftset", "selftest"),
])
def test_a_misspelt_command_is_an_invalid_choice_with_a_suggestion(
    tmp_path: Path, word: str, suggestion: str
) -> None:
    line = one_line_error(voprd(tmp_path, word))
    assert f"invalid choice: {word!r}" in line
    assert f"did you mean {suggestion!r}?" in line


@pytest.mark.parametrize(("args", "flag", "where"), [
    (["replay", "5", "-n", "5"], "-n", "voprd run and voprd daemon"),
    (["replay", "5", "--workers", "3"], "--workers", "voprd run and voprd daemon"),
    (["replay", "5", "--state-dir", "x"], "--state-dir", "voprd run and voprd daemon"),
    (["run", "--bucket", "b"], "--bucket", "voprd daemon"),
    (["run", "-n", "3", "--report", "r.html"], "--report", "voprd replay"),
    (["daemon", "-v"], "-v", "voprd replay"),
])
def test_a_flag_that_does_nothing_in_the_command_is_refused(
    tmp_path: Path, args: list[str], flag: str, where: str
) -> None:
    line = one_line_error(voprd(tmp_path, *args))
    assert f"argument {flag}: does nothing in voprd {args[0]}" in line
    assert where in line


@pytest.mark.parametrize(("args", "flag"), [
    (["--once", "--seed", "4", "-n", "5"], "-n/--iterations"),
    (["--once", "--seed", "4", "--workers", "3"], "--workers"),
    (["--once", "--seed", "4", "--state-dir", "x"], "--state-dir"),
    (["-n", "5", "-v"], "-v/--verbose"),
])
def test_the_flat_form_refuses_flags_its_mode_would_ignore(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    line = one_line_error(voprd(tmp_path, *args))
    assert f"argument {flag}:" in line


def test_a_misspelt_flag_gets_a_suggestion(tmp_path: Path) -> None:
    assert "did you mean --workers?" in one_line_error(voprd(tmp_path, "run", "--wrokers", "2"))
    assert "did you mean --seed?" in one_line_error(voprd(tmp_path, "--sed", "3", "-n", "1"))


def test_replay_takes_the_seed_once(tmp_path: Path) -> None:
    assert "required: SEED" in one_line_error(voprd(tmp_path, "replay"))
    assert "give the seed once" in one_line_error(voprd(tmp_path, "replay", "3", "--seed", "4"))


def test_every_flag_of_every_form_has_help_text() -> None:
    from voprd.check.cli import build_parser as lincheck_parser

    parsers = [cli.build_parser(), *(cli.build_mode_parser(mode) for mode in cli.MODE_GROUPS),
               lincheck_parser()]
    for parser in parsers:
        for action in parser._actions:
            if action.dest == "seed" and parser.prog == "voprd replay":
                continue  # `--seed` is the hidden alias of SEED there
            assert action.help and action.help != argparse.SUPPRESS, (parser.prog, action.dest)


def test_the_flat_form_takes_every_flag_of_every_command() -> None:
    flat = set(cli._option_strings(cli.build_parser()))
    for mode in cli.MODE_GROUPS:
        assert set(cli._option_strings(cli.build_mode_parser(mode))) <= flat, mode


def test_bugs_lists_the_planted_bugs(tmp_path: Path) -> None:
    proc = voprd(tmp_path, "bugs")
    assert proc.returncode == 0
    assert proc.stdout == voprd(tmp_path, "--list-bugs").stdout
    assert "commit_without_quorum" in proc.stdout


# --- parsing: modes, settings, fresh state ------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("VOPRD_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(("args", "mode", "fresh"), [
    (["run"], "run", True),
    (["run", "--state-dir", "d"], "run", False),
    (["run", "--checkpoint-file", "c.json"], "run", False),
    (["--seed", "0", "-n", "20", "--json"], "run", True),  # the flat bounded run
    (["--seed", "0", "-n", "20", "--state-dir", "d"], "run", False),
    (["--seed", "0", "-n", "20", "--bucket", "b"], "daemon", False),  # the fleet's bounded run
    (["--seed", "3"], "daemon", False),  # the flat daemon
    (["daemon", "-n", "20"], "daemon", False),
    (["replay", "3"], "replay", False),
    (["--once", "--seed", "3"], "replay", False),
])
def test_modes_and_fresh_state(args: list[str], mode: str, fresh: bool) -> None:
    settings, command = cli.parse(args)
    assert (command["mode"], command["fresh"]) == (mode, fresh)
    if mode != "daemon":
        assert settings.iterations is not None or mode == "replay"


@pytest.mark.usefixtures("clean_env")
def test_voprd_state_dir_names_a_state_to_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOPRD_STATE_DIR", "/somewhere")
    settings, command = cli.parse(["run", "-n", "5"])
    assert not command["fresh"]
    assert settings.state_dir == "/somewhere"


@pytest.mark.usefixtures("clean_env")
def test_a_systemd_state_directory_is_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit with StateDirectory= (deploy/systemd/voprd.service) running a flat bounded run.
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/voprd")
    _, command = cli.parse(["--seed", "0", "-n", "20", "--workers", "2"])
    assert (command["mode"], command["fresh"]) == ("run", False)


@pytest.mark.usefixtures("clean_env")
def test_run_is_always_local_and_has_a_default_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOPRD_BUCKET", "a-bucket")
    settings, _ = cli.parse(["run"])
    assert settings.backend == "local"
    assert settings.iterations == cli.DEFAULT_RUN_ITERATIONS
    daemon, _ = cli.parse(["daemon"])
    assert daemon.backend == "aws"
    assert daemon.iterations is None


@pytest.mark.usefixtures("clean_env")
def test_replay_and_the_flat_once_build_the_same_settings() -> None:
    words = ["--bug", "commit_without_quorum", "--faults", "network,crash", "--max-events", "900"]
    new, new_command = cli.parse(["replay", "7", "-v", *words, "--report", "r.html"])
    old, old_command = cli.parse(["--once", "--seed", "7", "-v", *words, "--report", "r.html"])
    assert new == old
    assert new.seed == 7 and new.verbose and new.bugs == ("commit_without_quorum",)
    assert new_command["report"] == old_command["report"] == Path("r.html")


# --- real runs ----------------------------------------------------------------------------------

def iterations(stdout: str) -> list[int]:
    return [json.loads(line)["data"]["seed"] for line in stdout.splitlines()
            if json.loads(line)["type"] == "iteration"]


def test_a_flat_bounded_run_twice_runs_every_seed_twice(tmp_path: Path) -> None:
    """The issue's report: a second `voprd --seed 0 -n N --json` printed nothing ("already
    finished" in a hidden shared state); bounded runs now start fresh."""
    for _ in range(2):
        proc = voprd(tmp_path, "--seed", "0", "-n", "20", "--json", "--workers", "2")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert sorted(iterations(proc.stdout)) == list(range(20))
    scratch = sorted(tmp_path.glob(f"{cli.SCRATCH_PREFIX}*"))
    assert len(scratch) == 2  # one fresh state each, kept (its failures/ would be there)
    assert not (tmp_path / "home").exists()  # nothing in ~/.local/state


def test_a_named_state_resumes_and_says_once_that_it_is_finished(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = voprd(tmp_path, "run", "-n", "4", "--workers", "1", "--state-dir", str(state))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "a fresh run" not in first.stderr  # a named state is not a scratch one
    again = voprd(tmp_path, "run", "-n", "4", "--workers", "1", "--state-dir", str(state))
    assert again.returncode == 0
    assert again.stderr == ""
    assert again.stdout.count("run already finished") == 1


def test_a_human_run_names_its_scratch_state(tmp_path: Path) -> None:
    proc = voprd(tmp_path, "run", "-n", "2", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.fullmatch(r"voprd: a fresh run in (\S+) \(.*\)\n", proc.stderr)
    assert match, proc.stderr
    assert Path(match[1]).parent == tmp_path
    assert (Path(match[1]) / "checkpoint.json").exists()


# --- the terminal -------------------------------------------------------------------------------

def test_describe_a_bounded_and_an_endless_run() -> None:
    line = describe(Snapshot(done=120, total=200, done_this_start=100, elapsed_s=10.0,
                             failures=2))
    assert re.fullmatch(r"120/200 seeds\s+60%\s+10\.0 seeds/s\s+ETA 0:00:08\s+2 failures", line)
    line = describe(Snapshot(done=1, total=None, done_this_start=1, elapsed_s=3700.0, failures=1))
    assert re.fullmatch(r"1 seed done\s+0\.0 seeds/s\s+1 failure\s+up 1:01:40", line)
    assert "ETA -:--:--" in describe(Snapshot(done=0, total=5, done_this_start=0, elapsed_s=0.0,
                                              failures=0))
    assert duration(59.6) == "0:01:00"


def test_terminal_log_lines_keep_the_sentence_and_shorten_the_fields() -> None:
    text = terminal_renderer(None, "warning", {
        "event": "seed_failed", "level": "warning", "timestamp": "2026-01-02T03:04:05.678Z",
        "msg": "seed 2 failed: durability\n  line 75 ...", "seed": 2, "history": ["x"] * 100,
    })
    lines = text.splitlines()
    assert lines[0] == "03:04:05 warning seed_failed: seed 2 failed: durability"
    assert lines[1] == "  line 75 ..."
    assert lines[2].startswith("  seed=2 history=['x', ")
    assert len(lines[2]) < 120 and lines[2].endswith("…")


needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")


def on_a_terminal(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run voprd with a pseudo-terminal as stdout (script(1)); what it drew, escapes removed."""
    command = shlex.join([sys.executable, "-m", "voprd", *args])
    proc = subprocess.run(["script", "-qfec", f"stty cols 120; {command}", "/dev/null"],
                          cwd=ROOT, env=env_for(tmp_path, TERM="xterm"), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout).replace("\r", "\n")
    return proc.returncode, drawn


@needs_script
def test_a_run_on_a_terminal_shows_progress_and_a_summary(tmp_path: Path) -> None:
    code, drawn = on_a_terminal(tmp_path, "run", "--seed", "0", "-n", "20", "--workers", "2",
                                "--bug", "commit_without_quorum")
    assert code == 1, drawn[-3000:]
    progress = re.findall(r"(\d+)/20 seeds\s+(\d+)%\s+[\d.]+ seeds/s\s+ETA [\d:-]+\s+\d+ failures?",
                          drawn)
    assert progress, drawn[-3000:]
    assert all(int(done) <= 20 for done, _ in progress)
    # What the seeds do with the bug (the same code in this process) is what the run reports.
    failed = {}
    for seed in range(20):
        result, _ = run_seed(seed, RunOptions(bugs=("commit_without_quorum",)), VSR)
        if result.status == "failed":
            failed[seed] = result.invariant
    assert failed, "the bug fails none of seeds 0..19: this run would prove nothing"
    for seed, invariant in failed.items():
        assert f"seed {seed} failed: {invariant}" in drawn
    summary = re.search(rf"20 seeds in [\d:]+ \([\d.]+ seeds/s\): {len(failed)} failures? "
                        r"\((\d+) distinct\)", drawn)
    assert summary, drawn[-3000:]  # a distinct failure per cause (fingerprint), at least one
    assert len(set(failed.values())) <= int(summary[1]) <= len(failed)  # per invariant
    assert re.search(r"^    voprd --once --seed \d+ --bug commit_without_quorum -v$", drawn,
                     flags=re.MULTILINE)


@needs_script
def test_json_on_a_terminal_has_no_progress_line(tmp_path: Path) -> None:
    code, drawn = on_a_terminal(tmp_path, "run", "-n", "6", "--workers", "2", "--json")
    assert code == 0
    assert "seeds/s  ETA" not in drawn
    # script(1) merges stderr (the log lines, readable there: a terminal) into what it captures.
    events = "\n".join(line for line in drawn.splitlines() if line.startswith("{"))
    assert sorted(iterations(events)) == list(range(6))


def test_no_progress_line_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    proc = voprd(tmp_path, "run", "-n", "6", "--workers", "2")
    assert proc.returncode == 0
    assert "ETA" not in proc.stdout + proc.stderr
    assert all(json.loads(line)["event"] for line in proc.stdout.splitlines())  # JSON log lines


def test_summary_lists_each_distinct_failure_by_first_seed(tmp_path: Path) -> None:
    from rich.console import Console

    from voprd.service.live import LiveProgress

    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        live = LiveProgress(Console(file=handle, width=60))
        live.summary(Snapshot(done=10, total=10, done_this_start=10, elapsed_s=2.0, failures=3,
                              distinct=[FingerprintCount(fingerprint="b", invariant="agreement",
                                                         count=1, first_seed=7),
                                        FingerprintCount(fingerprint="a", invariant="durability",
                                                         count=2, first_seed=3)]),
                     lambda seed: f"voprd --once --seed {seed} --bug a_rather_long_bug_name -v",
                     tmp_path / "failures")
    text = out.read_text()
    assert "10 seeds in 0:00:02 (5.0 seeds/s): 3 failures (2 distinct)" in text
    assert text.index("durability: 2 seeds") < text.index("agreement: 1 seed")
    # The command is one line even on a narrow terminal: it can be copied.
    assert "    voprd --once --seed 3 --bug a_rather_long_bug_name -v\n" in text
