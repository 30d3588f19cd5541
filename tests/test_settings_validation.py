"""One validation path for every setting (flags, VOPRD_* variables, the TOML file), and the exit
statuses that follow: 2 with one line for bad input and bad environments, 70 only for a bug."""

from __future__ import annotations

import errno
import json
import math
import sqlite3

import pytest

from voprd.config import ConfigError, Settings, build_settings, check_setting
from voprd.exits import EXIT_INTERRUPTED, EXIT_SOFTWARE, guarded
from voprd.service.app import Refused, refusal
from voprd.service.supervisor import WorkerStartupError

SEED_MAX = 2**64 - 1

BAD_VALUES = [
    ("seed", -1, "must be at least 0"),
    ("seed", SEED_MAX + 1, f"must be at most {SEED_MAX}"),
    ("iterations", 0, "must be at least 1"),
    ("faults", ["bogus"], "unknown fault class 'bogus'"),
    ("faults", "network,bogus", "unknown fault class 'bogus'"),
    ("max_events", 0, "must be at least 1"),
    ("workers", 0, "must be at least 1"),
    ("workers", 5000, "must be at most 1024"),
    ("seed_timeout_s", 0.0, "must be greater than 0"),
    ("seed_timeout_s", float("inf"), "must be at most"),
    ("seed_timeout_s", float("nan"), "must be greater than 0"),
    ("worker_memory_mb", 8, "must be at least 16"),
    ("drain_timeout_s", -1.0, "must be greater than 0"),
    ("batch_size", 0, "must be at least 1"),
    ("lease_seconds", 0.0, "must be greater than 0"),
    ("seed_stride", 0, "must be at least 1"),
    ("seed_stride", SEED_MAX + 1, "must be at most"),
    ("exec_cmd", "", "must not be empty"),
    ("exec_cmd", "'unbalanced", "not a command line"),
    ("state_dir", "a\x07b", "control character"),
    ("target", "", "must not be empty"),
    ("sns_topic_arn", "arn:aws:sns:us-east-1:123456789012", "not an SNS topic ARN"),
    ("run_name", "a/b", "must be 1-128 characters"),
    ("region", "x" * 5000, "longer than"),
]


def toml_value(value: object) -> str:
    """A TOML literal (JSON's strings and lists of strings are TOML's too; TOML spells inf and
    nan bare; an integer past int64 is still read by Python's TOML reader)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    if isinstance(value, str | list):
        return json.dumps(value)
    return str(value)


@pytest.mark.parametrize(("field", "value", "words"), BAD_VALUES)
def test_every_source_refuses_a_bad_value_the_same_way(field: str, value: object,
                                                       words: str) -> None:
    with pytest.raises(ValueError) as direct:
        check_setting(field, value)
    assert words in str(direct.value)
    with pytest.raises(ConfigError) as from_flag:
        build_settings({field: value}, env={})
    assert str(from_flag.value).startswith("argument -") and words in str(from_flag.value)
    with pytest.raises(ConfigError) as from_file:
        build_settings({}, env={}, file_text=f"{field} = {toml_value(value)}\n",
                       file_name="/etc/voprd/voprd.toml")
    assert str(from_file.value) == f"/etc/voprd/voprd.toml: {field}: {direct.value}"


def test_planted_bugs_are_checked_against_the_targets_system_from_every_source() -> None:
    """Which bugs exist depends on --target (each system plants its own), so the check runs once
    the target is known, and still names where the bad name came from."""
    with pytest.raises(ConfigError, match=r"^argument --bug: unknown bug 'no-such-bug'"):
        build_settings({"bugs": ("no-such-bug",)}, env={})
    with pytest.raises(ConfigError, match=r"^/etc/voprd/voprd.toml: bugs: unknown bug"):
        build_settings({}, env={}, file_text='bugs = ["no-such-bug"]\n',
                       file_name="/etc/voprd/voprd.toml")
    with pytest.raises(ConfigError, match=r"^argument --bug: planted bugs need a simulation"):
        build_settings({"bugs": ("ack_before_fsync",), "target": "exec", "exec_cmd": "x"},
                       env={})
    assert build_settings({"bugs": ("ack_before_fsync",)}, env={}).bugs == ("ack_before_fsync",)


def test_the_environment_is_named_when_it_gives_a_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"^VOPRD_SNS_TOPIC_ARN: 'x' is not an SNS topic ARN"):
        build_settings({}, env={"VOPRD_SNS_TOPIC_ARN": "x"})
    with pytest.raises(ConfigError, match=r"^VOPRD_RUN: 'a b' must be"):
        build_settings({}, env={"VOPRD_RUN": "a b"})


def test_values_are_normalised_alike_from_every_source() -> None:
    from_text = build_settings({}, env={}, file_text='faults = "clock,network"\n')
    from_list = build_settings({}, env={}, file_text='faults = ["network", "clock"]\n')
    from_flag = build_settings({"faults": "network,clock"}, env={})
    assert from_text.faults == from_list.faults == from_flag.faults == ("network", "clock")
    assert build_settings({}, env={}, file_text='faults = "none"\n').faults == ()
    top = build_settings({}, env={}, file_text=f'seed = "{SEED_MAX}"\niterations = 1\n')
    assert (top.seed, top.iterations) == (SEED_MAX, 1)
    assert build_settings({"seed": SEED_MAX, "iterations": 1}, env={}).seed == SEED_MAX


def test_a_run_must_fit_in_the_seed_space() -> None:
    assert build_settings({"seed": SEED_MAX - 9, "iterations": 10}, env={}).iterations == 10
    with pytest.raises(ConfigError, match=r"^argument -n: seeds .* past the largest seed"):
        build_settings({"seed": SEED_MAX - 9, "iterations": 11}, env={})
    with pytest.raises(ConfigError, match="past the largest seed"):
        build_settings({"seed": 10, "iterations": 2**62, "seed_stride": 8}, env={})
    with pytest.raises(ConfigError, match="'exec' needs --exec CMD"):
        build_settings({"target": "exec"}, env={})


def test_refusals_and_environment_errors_are_one_line_bugs_are_not() -> None:
    assert refusal(Refused("another voprd (pid 7) is running")) == (
        "another voprd (pid 7) is running")
    assert refusal(WorkerStartupError("workers exit before ready")) == "workers exit before ready"
    full = OSError(errno.ENOSPC, "No space left on device", "/state/checkpoint.json")
    assert refusal(full) == "/state/checkpoint.json: No space left on device"
    nested = ExceptionGroup("run", [ExceptionGroup("pool", [full])])
    assert refusal(nested) == "/state/checkpoint.json: No space left on device"
    assert refusal(sqlite3.OperationalError("database or disk is full")) is not None
    assert refusal(ZeroDivisionError("bug")) is None
    assert refusal(ExceptionGroup("run", [full, KeyError("bug")])) is None
    assert refusal(sqlite3.OperationalError("near \"SELEC\": syntax error")) is None
    assert isinstance(Settings(), Settings)


def test_a_bug_is_exit_70_with_its_traceback_never_1(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(argv: list[str]) -> int:
        raise KeyError("a bug")

    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    assert guarded(broken, []) == EXIT_SOFTWARE == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err and "exit 70" in err
    assert guarded(interrupted, []) == EXIT_INTERRUPTED
    assert "Traceback" not in capsys.readouterr().err
    assert guarded(lambda argv: 1, []) == 1


def test_exec_implies_the_exec_target_and_is_refused_with_another() -> None:
    implied = build_settings({"exec_cmd": "sim {seed}"}, env={})
    assert (implied.target, implied.exec_cmd) == ("exec", "sim {seed}")
    with pytest.raises(ConfigError, match=r"^argument --exec: only with --target exec"):
        build_settings({"exec_cmd": "sim", "target": "builtin"}, env={})
    with pytest.raises(ConfigError, match=r"^/etc/voprd/voprd.toml: exec_cmd: only with"):
        build_settings({}, env={}, file_text='exec_cmd = "sim"\ntarget = "builtin"\n',
                       file_name="/etc/voprd/voprd.toml")
