"""Pure parts of the AWS backend: fitting alerts into SNS limits, metric data from aggregates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.aws_records import aggregate
from voprd.sinks.aws.metrics import metric_data
from voprd.sinks.aws.sns import MESSAGE_BYTES_BUDGET, fit_message, fit_subject


def test_subject_is_one_line_of_ascii_within_100() -> None:
    assert fit_subject("VOPR: 1 Invariant Violation(s) Detected") == (
        "VOPR: 1 Invariant Violation(s) Detected"
    )
    fitted = fit_subject("VOPR:\n  é " + "x" * 300)
    assert fitted.startswith("VOPR: ? x") and fitted.endswith("...") and len(fitted) == 100
    assert fit_subject("   ") == "VOPR alert"


@given(st.text(max_size=400))
def test_any_subject_fits(subject: str) -> None:
    fitted = fit_subject(subject)
    assert 0 < len(fitted) <= 100 and fitted.isascii() and "\n" not in fitted


def _alert(history_lines: int, message: str = "Final history is not linearizable") -> str:
    history = "".join(f"  op {i}: put k{i} " + "v" * 100 + "\n" for i in range(history_lines))
    return (
        "VOPR detected 1 invariant violation(s) in batch starting at seed 42000.\n\n"
        "Seed: 42042\nInvariant: linearizability\n"
        f"Message: {message}\n"
        "Reproduce: voprd --once --seed 42042 -v\n"
        "History:\n" + history +
        "---\nInstance: i-1\nTimestamp: 2026-11-27T06:00:00Z\nArchive: s3://b/failures/x.json\n"
    )


def test_small_message_unchanged() -> None:
    text = _alert(5)
    assert fit_message(text) == text


def test_history_cut_never_the_seed_or_reproduce_line() -> None:
    text = _alert(10_000, message="m" * 100_000)
    fitted = fit_message(text)
    assert len(fitted.encode()) <= MESSAGE_BYTES_BUDGET
    lines = fitted.splitlines()
    for kept in ("Seed: 42042", "Reproduce: voprd --once --seed 42042 -v",
                 "Invariant: linearizability", "Instance: i-1", "Archive: s3://b/failures/x.json",
                 "History:", "---"):
        assert kept in lines
    assert lines[0].startswith("VOPR detected 1 invariant violation(s)")
    [marker] = [line for line in lines if line.startswith("[... ")]
    assert lines.index(marker) < lines.index("---")
    message_line = next(line for line in lines if line.startswith("Message: "))
    assert message_line.endswith("[...]") and len(message_line) < 17 * 1024
    # The history kept is a prefix of the original history, in order.
    kept_ops = [line for line in lines if line.startswith("  op ")]
    assert kept_ops == [f"  op {i}: put k{i} " + "v" * 100 for i in range(len(kept_ops))]


def test_metric_data_without_and_with_instance_dimension() -> None:
    data = metric_data(aggregate(1_790_000_040 - 40, 3, 1, 30, [0.5, 1.0, 2.0]),
                       instance="i-1", instance_dimension=False)
    by_name = {d["MetricName"]: d for d in data}
    assert sorted(by_name) == ["EventsSimulated", "FailuresDetected", "IterationsCompleted",
                               "SeedDuration"]
    assert by_name["IterationsCompleted"]["Value"] == 3.0
    assert by_name["SeedDuration"]["StatisticValues"] == {
        "SampleCount": 3.0, "Sum": 3.5, "Minimum": 0.5, "Maximum": 2.0,
    }
    assert by_name["SeedDuration"]["Unit"] == "Seconds"
    assert all("Dimensions" not in d for d in data)
    assert by_name["IterationsCompleted"]["Timestamp"].timestamp() == 1_790_000_000
    doubled = metric_data(aggregate(0, 3, 1, 30, [0.5]), instance="i-1", instance_dimension=True)
    assert len(doubled) == 8
    assert [d.get("Dimensions") for d in doubled[4:]] == [[{"Name": "InstanceId",
                                                           "Value": "i-1"}]] * 4


def test_idle_minute_has_no_statistic_set() -> None:
    data = metric_data(aggregate(0, 0, 0, 0, []), instance="i-1", instance_dimension=False)
    assert [d["MetricName"] for d in data] == [
        "IterationsCompleted", "FailuresDetected", "EventsSimulated",
    ]
    assert all(d["Value"] == 0.0 for d in data)


def test_only_invalid_requests_are_permanent() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from voprd.sinks.aws.backend import is_permanent

    def error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "x"},
             "ResponseMetadata": {"HTTPStatusCode": status}},
            "PutLogEvents",
        )

    assert is_permanent(error("InvalidParameterException", 400))
    assert is_permanent(error("EntityTooLarge", 413))
    for code, status in (("ThrottlingException", 400), ("ResourceNotFoundException", 400),
                         ("AccessDenied", 403), ("InternalError", 500), ("SlowDown", 503),
                         ("ExpiredTokenException", 400)):
        assert not is_permanent(error(code, status)), code
    assert not is_permanent(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
