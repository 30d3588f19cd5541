"""The exec target in-process: the lenient JSON-lines reader, command templates, the exit-code
protocol, output bounds, the child's environment and process group, failure fingerprints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from voprd import procs
from voprd.core.failures import fingerprint, normalise_message
from voprd.events import SeedResult
from voprd.options import RunOptions, reproduce_command
from voprd.targets.exec import ExecTarget
from voprd.targets.exec_command import (
    ExecCommandError,
    check_command,
    child_environment,
    parse_command,
    resolve_program,
)
from voprd.targets.exec_process import ExternalProcess, StateDir
from voprd.targets.exec_protocol import (
    LINE_BYTES_MAX,
    Ignored,
    LineSplitter,
    Problem,
    Report,
    exit_status_result,
    failure_of,
    read_line,
)

ROOT = Path(__file__).resolve().parent.parent
FAKE_VOPR = f"{sys.executable} {ROOT / 'tests' / 'fake_vopr.py'}"
FAKE_SIM = f"{sys.executable} {ROOT / 'tests' / 'fake_exit_sim.py'}"


def exec_options(command: str, protocol: str = "json-lines", env: tuple[str, ...] = ()
                 ) -> RunOptions:
    return RunOptions(target="exec", exec_cmd=command, exec_protocol=protocol, exec_env=env)


def run_all(command: str, seeds: list[int], protocol: str = "json-lines",
            env: tuple[str, ...] = ()) -> dict[int, SeedResult]:
    target = ExecTarget(command)
    results = {}
    for result in target.run_batch(seeds, exec_options(command, protocol, env)):
        assert result.seed not in results, f"seed {result.seed} reported twice"
        results[result.seed] = result
    assert sorted(results) == sorted(seeds), "every seed accounted for, once"
    return results


def wait_gone(pids: list[int], timeout_s: float = 30) -> list[int]:
    """The pids still running (not zombies) after waiting up to timeout_s for them to go."""
    deadline = time.monotonic() + timeout_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if procs.is_running(pid)]
        time.sleep(0.05)
    return alive


# --- the JSON-lines reader ----------------------------------------------------------------------


def test_an_iteration_line_needs_only_type_seed_status_and_events() -> None:
    line = read_line(b'{"type":"iteration","data":{"seed":13,"status":"ok","events":8377}}')
    assert line == Report(seed=13, ok=True, events=8377, simulated_time_ms=0, trace_hash="",
                          kind=None, invariant=None, message=None)


def test_the_guides_own_failed_line_without_events_is_read() -> None:
    raw = (b'{"timestamp":"2026-01-30T12:00:02Z","type":"iteration","data":{"seed":1,'
           b'"status":"failed","invariant":"linearizability","message":"..."}}')
    line = read_line(raw)
    assert isinstance(line, Report)
    assert (line.ok, line.events, line.kind, line.invariant, line.message) == (
        False, 0, "invariant", "linearizability", "...")


def test_unknown_fields_are_ignored_and_bad_optional_fields_dropped() -> None:
    raw = json.dumps({"type": "iteration", "extra": [1], "data": {
        "seed": 4, "status": "OK", "events": 10**30, "simulated_time_ms": "soon",
        "trace_hash": 12, "replicas": 3, "nested": {"a": [1, 2]}}}).encode()
    line = read_line(raw)
    assert isinstance(line, Report) and line.ok
    assert (line.events, line.simulated_time_ms, line.trace_hash) == (0, 0, "")
    assert set(line.dropped_fields) == {"events", "simulated_time_ms", "trace_hash"}
    whole = read_line(b'{"type":"iteration","data":{"seed":4,"status":"ok","events":12.0}}')
    assert isinstance(whole, Report) and whole.events == 12


@pytest.mark.parametrize("raw, problem", [
    (b"plain text", "not_json"),
    (b'{"type": "iteration", "data": {"seed": ', "not_json"),
    (b"[1, 2, 3]", "not_json"),
    (b'"a string"', "not_json"),
    (b"\xff\xfe\x00 binary", "not_json"),
    (b'{"data": {"seed": 1, "status": "ok"}}', "not_an_event"),
    (b'{"type": 7, "data": {}}', "not_an_event"),
    (b'{"type": "iteration", "data": [1]}', "bad_iteration"),
    (b'{"type": "iteration"}', "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": "seven", "status": "ok"}}', "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": -1, "status": "ok"}}', "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": 1' + b"0" * 40 + b', "status": "ok"}}',
     "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": true, "status": "ok"}}', "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": 1, "status": false}}', "bad_iteration"),
    (b'{"type": "iteration", "data": {"seed": 1}}', "bad_iteration"),
    (b'{"type": "iteration", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not_json"),
    (b'{"type": "iteration", "data": {"seed": 1e999, "status": "ok"}}', "not_an_event"),
])
def test_what_is_not_protocol_is_a_problem_never_an_exception(raw: bytes, problem: str) -> None:
    line = read_line(raw)
    assert isinstance(line, Problem), line
    assert line.kind == problem, line
    assert len(line.detail) < 1000


def test_other_line_types_are_ignored_known_or_not() -> None:
    assert read_line(b'{"type":"start","data":{"starting_seed":0,"iterations":10}}') == Ignored(
        type="start", known=True)
    assert read_line(b'{"type":"batch_complete","data":{"successes":9,"failures":1}}') == Ignored(
        type="batch_complete", known=True)
    assert read_line(b'{"type":"progress"}') == Ignored(type="progress", known=False)
    assert read_line(b"   ") == Ignored(type="", known=True)


def test_failure_kinds_map_sensibly_and_keep_the_binarys_word() -> None:
    assert failure_of(status="failed", kind=None, invariant="agreement", message="m") == (
        "invariant", "agreement", "m")
    assert failure_of(status="failed", kind=None, invariant=None, message="m") == (
        "invariant", None, "m")
    assert failure_of(status="failed", kind="panic", invariant=None, message="oops") == (
        "crash", None, "panic: oops")
    assert failure_of(status="failed", kind="liveness", invariant=None, message="m") == (
        "liveness", None, "m")
    assert failure_of(status="failed", kind="Timed-Out", invariant=None, message=None) == (
        "timeout", None, "Timed-Out")
    assert failure_of(status="failed", kind="assertion", invariant="x", message="m") == (
        "invariant", "x", "assertion: m")
    assert failure_of(status="stuck", kind=None, invariant=None, message="no progress") == (
        "liveness", None, "stuck: no progress")
    assert failure_of(status="weird", kind=None, invariant=None, message="m") == (
        "invariant", None, "weird: m")


def test_long_messages_and_names_are_cut() -> None:
    raw = json.dumps({"type": "iteration", "data": {
        "seed": 1, "status": "failed", "events": 1, "invariant": "i" * 5000,
        "message": "m" * 100_000, "kind": {"not": "a string"}}}).encode()
    line = read_line(raw)
    assert isinstance(line, Report)
    assert len(line.invariant or "") <= 200 and len(line.message or "") <= 4300


def test_line_splitter_cuts_long_lines_and_holds_one_partial_line_at_most() -> None:
    splitter = LineSplitter(line_bytes_max=10)
    assert splitter.feed(b"short\nabcdefghijklmnop") == [(b"short", False)]
    assert len(splitter._partial) <= 10
    assert splitter.feed(b"qrstuvwxyz" * 1000) == []
    assert len(splitter._partial) <= 10
    assert splitter.feed(b"\nnext\nta") == [(b"abcdefghij", True), (b"next", False)]
    assert splitter.finish() == [(b"ta", False)]
    assert splitter.finish() == []


# --- templates and programs ---------------------------------------------------------------------


def test_without_placeholders_the_classic_arguments_are_appended() -> None:
    command = parse_command("vopr --faults all")
    assert command.argv(5, 3) == ["vopr", "--faults", "all", "--json", "--seed", "5", "-n", "3"]
    assert command.argv(5, 1, verbose=True)[-1] == "-v"
    assert not command.one_seed_per_process


def test_placeholders_are_filled_per_argv_word_without_a_shell() -> None:
    command = parse_command(
        "vopr --json --seed {seed} -n {count} {verbose} 'a b;{{x}}' s={seed:05d}")
    assert command.argv(42, 7) == ["vopr", "--json", "--seed", "42", "-n", "7", "a b;{x}",
                                   "s=00042"]
    assert command.argv(42, 1, verbose=True)[6] == "-v"
    assert not command.one_seed_per_process
    single = parse_command("sim --seed={seed}")
    assert single.one_seed_per_process and single.argv(3, 1) == ["sim", "--seed=3"]
    exit_code = parse_command("sim {seed}", "exit-code")
    assert exit_code.one_seed_per_process and exit_code.argv(9, 1) == ["sim", "9"]


@pytest.mark.parametrize("template, protocol, says", [
    ("", "json-lines", "empty"),
    ("   ", "json-lines", "empty"),
    ("vopr 'unclosed", "json-lines", "cannot split"),
    ("vopr --seed {sed}", "json-lines", "unknown placeholder {sed}"),
    ("vopr --seed {seed", "json-lines", "bad braces"),
    ("vopr --seed seed}", "json-lines", "bad braces"),
    ("vopr --seed {seed!r}", "json-lines", "no conversions"),
    ("vopr --seed {seed:q}", "json-lines", "bad format"),
    ("{seed}/vopr", "json-lines", "program name"),
    ("vopr -n {count}", "json-lines", "no {seed}"),
    ("sim", "exit-code", "where the seed goes"),
    ("sim {seed}", "tcp", "--exec-protocol"),
])
def test_bad_templates_are_refused_naming_the_flag(template: str, protocol: str, says: str
                                                   ) -> None:
    with pytest.raises(ExecCommandError) as refused:
        parse_command(template, protocol)
    text = str(refused.value)
    assert says in text and text.startswith("--exec") and "\n" not in text


def test_programs_are_resolved_as_the_os_would(tmp_path: Path) -> None:
    assert resolve_program("sh") == resolve_program("sh", os.environ["PATH"])
    script = tmp_path / "sim"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(ExecCommandError, match="not an executable file"):
        resolve_program(str(script))
    script.chmod(0o755)
    assert resolve_program(str(script)) == str(script)
    assert resolve_program("sim", path=str(tmp_path)) == str(script)
    with pytest.raises(ExecCommandError, match="not found on PATH"):
        resolve_program("sim", path="/nonexistent")
    with pytest.raises(ExecCommandError, match="no such program"):
        resolve_program(str(tmp_path / "missing"))
    with pytest.raises(ExecCommandError, match="not an executable file"):
        resolve_program(str(tmp_path))
    with pytest.raises(ExecCommandError, match="--exec-env"):
        check_command("sh", "json-lines", ["BAD=1"])
    with pytest.raises(ExecCommandError, match="--exec-env"):
        check_command("sh", "json-lines", ["1BAD"])


def test_the_child_environment_is_minimal() -> None:
    source = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "AWS_ACCESS_KEY_ID": "AKIA",
              "AWS_SECRET_ACCESS_KEY": "s", "VOPRD_BUCKET": "b", "MY_LICENSE": "42",
              "VOPRD_STATE_DIR": "/daemon/state"}
    env = child_environment("/tmp/run", ["MY_LICENSE", "UNSET_NAME"], source)
    assert env == {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "MY_LICENSE": "42",
                   "VOPRD_STATE_DIR": "/tmp/run"}
    assert child_environment("/tmp/run", [], {})["PATH"] == os.defpath


def test_reproduce_line_carries_protocol_template_and_environment() -> None:
    options = exec_options("sim --seed {seed}", "exit-code", ("MY_LICENSE", "OTHER"))
    assert reproduce_command(7, options) == (
        "voprd --once --seed 7 --target exec --exec 'sim --seed {seed}' --exec-protocol "
        "exit-code --exec-env MY_LICENSE --exec-env OTHER -v")
    assert "--exec-protocol" not in reproduce_command(7, exec_options("vopr"))


# --- running a JSON-lines binary ----------------------------------------------------------------


def test_minimal_hostile_binary_aborting_mid_batch_accounts_for_every_seed_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    results = run_all(f"{FAKE_VOPR} --minimal --hostile --abort-at 6", list(range(12)))
    failed = {seed for seed, result in results.items() if result.status == "failed"}
    assert failed == {4, 6}
    assert results[4].kind == "invariant" and results[4].invariant == "agreement"
    assert results[4].events == 8004 and results[4].message == "op 4 diverged"
    assert results[7].status == "ok" and results[7].events == 8007  # re-run alone, reported
    assert results[8].status == "ok" and results[8].events == 0  # "many" dropped; first counts
    crash = results[6]
    assert crash.kind == "crash" and crash.message is not None
    assert "killed by signal SIGABRT" in crash.message
    assert "panicked at src/vopr.rs:6" in crash.message  # its last output (stderr) says why
    assert "without reporting the seed" in crash.message
    log = capfd.readouterr().err
    for event in ("exec_output_not_protocol", "exec_seed_out_of_range", "exec_seed_duplicate",
                  "exec_unknown_line_type", "exec_seeds_unreported", "exec_fields_dropped"):
        assert f'"event": "{event}"' in log, event
    # Noise on every seed is logged at the 1st, 10th, 100th occurrence, not once per line.
    noise = [line for line in log.splitlines() if "exec_output_not_protocol" in line]
    assert 2 <= len(noise) <= 4


def test_a_seed_never_reported_even_alone_is_a_crash_with_how_the_process_ended() -> None:
    results = run_all(f"{FAKE_VOPR} --die-at 3", [1, 2, 3, 4])
    assert [results[s].status for s in (1, 2, 4)] == ["ok", "ok", "failed"]  # 4: seed % 10 == 4
    message = results[3].message or ""
    assert results[3].kind == "crash"
    assert message.startswith("the external command exited with code 3 without reporting")
    assert "{ torn json" in message


def test_exit_status_of_a_binary_that_reported_everything_is_ignored() -> None:
    results = run_all(f"{FAKE_VOPR} --exit-code 1", [0, 1, 2])
    assert all(result.status == "ok" for result in results.values())


def test_a_binary_lingering_after_its_last_report_is_stopped() -> None:
    started = time.monotonic()
    results = run_all(f"{FAKE_VOPR} --linger", [0, 1])
    assert all(result.status == "ok" for result in results.values())
    assert time.monotonic() - started < 600  # the 1000 s sleep was cut short


def test_one_process_per_seed_when_the_template_has_no_count(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "one_seed.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        seed = int(sys.argv[1])
        open({str(calls)!r}, "a").write(f"{{seed}}\\n")
        print(json.dumps({{"type": "iteration", "data": {{"seed": seed, "status": "ok",
                                                          "events": 1}}}}))
    """))
    results = run_all(f"{sys.executable} {script} {{seed}}", [3, 4, 5])
    assert sorted(results) == [3, 4, 5]
    assert calls.read_text().split() == ["3", "4", "5"]


def test_a_program_that_cannot_start_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    results = run_all(str(tmp_path / "gone"), [0])
    assert results[0].kind == "crash" and "cannot start" in (results[0].message or "")
    results = run_all(f"{tmp_path / 'gone'} {{seed}}", [0], protocol="exit-code")
    assert results[0].kind == "crash" and "cannot start" in (results[0].message or "")


# --- exit-code protocol -------------------------------------------------------------------------


def test_exit_code_protocol_verdicts() -> None:
    results = run_all(f"{FAKE_SIM} {{seed}}", [1, 13, 17], protocol="exit-code")
    assert results[1].status == "ok"
    assertion = results[13]
    assert (assertion.status, assertion.kind, assertion.invariant) == (
        "failed", "invariant", "exit code 1")
    assert assertion.message == (
        "simulating seed 13 | checking ledger of run 221 | assertion failed: balance -13 < 0 "
        "in /tmp/run-13/ledger.c:53 after 13ms")
    assert assertion.trace_tail[-1].startswith("assertion failed")
    crash = results[17]
    assert crash.kind == "crash" and crash.invariant is None
    assert (crash.message or "").startswith("killed by signal SIGABRT: ")
    assert "journal checksum mismatch" in (crash.message or "")


def test_exit_status_result_without_output() -> None:
    assert exit_status_result(1, 2, []).message == "exited with code 2 and printed nothing"
    assert exit_status_result(1, -9, []).message == "killed by signal SIGKILL"
    assert exit_status_result(1, 0, ["noise"]).status == "ok"


# --- output bounds ------------------------------------------------------------------------------


def _peak_rss_mb_running(command: str, protocol: str) -> tuple[float, list[str]]:
    """Run the exec target on seed 0 in a fresh process; its peak RSS (MB) and its results."""
    code = textwrap.dedent(f"""
        import sys
        from voprd.options import RunOptions
        from voprd.targets.exec import ExecTarget
        command = {command!r}
        options = RunOptions(target="exec", exec_cmd=command, exec_protocol={protocol!r})
        for r in ExecTarget(command).run_batch([0], options):
            print(r.status, r.kind, (r.message or "").replace("\\n", " ")[:300])
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) high-water mark.
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600,
                          check=True, cwd=ROOT)
    lines = done.stdout.decode().splitlines()
    return float(lines[-1]), lines[:-1]


def test_a_100_mb_line_is_cut_and_memory_stays_bounded() -> None:
    peak_mb, results = _peak_rss_mb_running(f"{FAKE_SIM} {{seed}} --long-line 100", "exit-code")
    assert results == ["ok None "]
    assert peak_mb < 100, f"peak RSS {peak_mb:.0f} MB while reading a 100 MB line"
    assert LINE_BYTES_MAX < 100 * 1024 * 1024


def test_a_flood_is_stopped_at_the_per_seed_bound_and_memory_stays_bounded() -> None:
    peak_mb, results = _peak_rss_mb_running(f"{FAKE_SIM} {{seed}} --flood", "exit-code")
    assert len(results) == 1 and results[0].startswith("failed crash printed more output")
    assert peak_mb < 100, f"peak RSS {peak_mb:.0f} MB while reading a flood"
    peak_mb, results = _peak_rss_mb_running(f"{FAKE_SIM} {{seed}} --flood", "json-lines")
    assert len(results) == 1 and "printed more output than the per-seed bound" in results[0]
    assert peak_mb < 100


def test_external_process_stops_at_a_small_output_bound(tmp_path: Path) -> None:
    with ExternalProcess(["sh", "-c", "yes"], str(tmp_path),
                         output_bytes_per_seed_max=100_000) as process:
        lines = list(process.lines())
    assert process.stopped == "output" and process.returncode == -9
    assert sum(len(line) + 1 for line, _ in lines) <= 100_000


# --- environment and process groups -------------------------------------------------------------


def test_the_child_gets_the_minimal_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("VOPRD_SNS_TOPIC_ARN", "arn:aws:sns:x")
    monkeypatch.setenv("MY_LICENSE", "licensed")
    results = run_all(f"{FAKE_SIM} {{seed}} --env-dump {tmp_path}", [5, 6],
                      protocol="exit-code", env=("MY_LICENSE",))
    assert results[5].status == results[6].status == "ok"
    for seed in (5, 6):
        dump = json.loads((tmp_path / f"env-{seed}.json").read_text())
        env = dump["environ"]
        assert set(env) - {"LC_CTYPE"} <= {"PATH", "HOME", "LANG", "TMPDIR", "VOPRD_STATE_DIR",
                                           "MY_LICENSE"}
        assert env["MY_LICENSE"] == "licensed" and env["PATH"] == os.environ["PATH"]
        assert dump["state_dir_entries"] == [], "each run starts with an empty state directory"
    assert not Path(env["VOPRD_STATE_DIR"]).exists(), "the state directory goes with the target"


def test_state_directories_of_dead_processes_are_removed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, check=True)
    stale = tmp_path / f"voprd-exec-{int(dead.stdout)}-abc"
    (stale / "left").mkdir(parents=True)
    alive = tmp_path / f"voprd-exec-{os.getppid()}-def"
    alive.mkdir()
    other = tmp_path / "voprd-exec-unrelated"
    other.mkdir()
    state = StateDir()
    path = state.fresh()
    assert path.startswith(str(tmp_path / f"voprd-exec-{os.getpid()}-"))
    assert not stale.exists() and alive.exists() and other.exists()
    state.close()
    assert not Path(path).exists()


def test_the_child_runs_in_its_own_process_group_and_its_group_dies_with_it(tmp_path: Path
                                                                           ) -> None:
    with ExternalProcess([*FAKE_SIM.split(), "0", "--grandchild", str(tmp_path)],
                         str(tmp_path)) as process:
        lines = list(process.lines())
        assert os.getpgid(0) != process.pid
    assert lines[0] == (b"simulating seed 0", False)
    spawned = [int(path.name) for path in tmp_path.iterdir() if path.name.isdigit()]
    assert len(spawned) == 2 and process.pid in spawned
    assert wait_gone(spawned) == [], "the grandchild outlived its seed"


def test_a_batch_leaves_no_grandchild_behind(tmp_path: Path) -> None:
    results = run_all(f"{FAKE_VOPR} --grandchild {tmp_path}", [0, 1, 2])
    assert all(result.status == "ok" for result in results.values())
    grandchildren = [int(path.name) for path in tmp_path.iterdir()]
    assert len(grandchildren) == 1 and wait_gone(grandchildren) == []


# --- fingerprints: one alert per cause ----------------------------------------------------------


def test_three_seeds_of_one_foreign_assertion_share_a_fingerprint() -> None:
    messages = [
        f"assertion failed: balance {s * 7} < 0 at /tmp/build-{s * 31}/src/ledger.rs:{100 + s} "
        f"after {s}.5s (seed {s}, request {s:08x}deadbeef) at 2026-01-30T12:00:{s % 60:02d}Z"
        for s in (3, 17, 123456)
    ]
    prints = {fingerprint("invariant", "linearizability", m, []) for m in messages}
    assert len(prints) == 1
    other = fingerprint("invariant", "linearizability",
                        messages[0].replace("ledger.rs", "raft.rs"), [])
    assert other not in prints, "a different source file is a different cause"


def test_external_crash_fingerprints_keep_exit_code_or_signal_and_drop_seeds() -> None:
    def crash(message: str) -> str:
        return fingerprint("crash", None, message, [])

    unreported = ("the external command exited with code {code} without reporting the seed; "
                  "last output: seed {seed} took {ms}ms")
    assert crash(unreported.format(code=0, seed=13, ms=5)) == crash(
        unreported.format(code=0, seed=14, ms=700))
    assert crash(unreported.format(code=0, seed=13, ms=5)) != crash(
        unreported.format(code=3, seed=13, ms=5))
    assert crash("killed by signal SIGABRT: offset 4096") == crash(
        "killed by signal SIGABRT: offset 8192")
    assert crash("killed by signal SIGABRT: x") != crash("killed by signal SIGSEGV: x")
    # The root cause of one alert per seed: the old crash message kept its seed number.
    old = "external command exited with code 0 without reporting seed {} (twice): vopr"
    assert crash(old.format(13)) == crash(old.format(14))
    assert normalise_message("exit status 3 after 2 seconds") == "exit status 3 after <dur>"
