"""`voprd --once --seed N`: run one seed, print its outcome, optionally its trace and history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from voprd.config import Settings
from voprd.events import IterationData, SeedResult, encode_event
from voprd.options import RunOptions, reproduce_command
from voprd.sim.run import check_determinism, simulate
from voprd.sim.trace import format_event


def iteration_data(result: SeedResult, options: RunOptions) -> IterationData:
    """The `iteration` event for a seed's result (with `reproduce` when it failed)."""
    data = IterationData(
        seed=result.seed, status=result.status, events=result.events,
        simulated_time_ms=result.simulated_time_ms, trace_hash=result.trace_hash,
        bounds_reached=list(result.bounds_reached),
    )
    if result.status == "failed":
        data.kind = result.kind
        data.invariant = result.invariant
        data.message = result.message
        data.reproduce = reproduce_command(result.seed, options)
    return data


def summary_line(result: SeedResult) -> str:
    text = (
        f"seed {result.seed}: {result.status} events={result.events} "
        f"simulated_time_ms={result.simulated_time_ms} trace_hash={result.trace_hash}"
    )
    if result.bounds_reached:
        text += " bounds_reached=" + ",".join(result.bounds_reached)
    return text


def once_main(settings: Settings, command: dict[str, Any]) -> int:
    options = settings.run_options()
    # The target is resolved here, not imported by the engine (it knows no system).
    from voprd.targets.loader import TargetNotFound, load_system

    try:
        system = load_system(options.target)
    except TargetNotFound as exc:
        sys.stderr.write(f"voprd: error: argument --target: --once runs engine targets: {exc}\n")
        return 2
    try:
        system.validate_bugs(options.bugs)
    except ValueError as exc:
        sys.stderr.write(f"voprd: error: argument --bug: {exc}\n")
        return 2
    if command.get("report") is not None:
        from voprd.report import write_report_for_seed

        size_bytes = write_report_for_seed(settings.seed, options, command["report"])
        sys.stderr.write(f"voprd: report written to {command['report']} ({size_bytes} bytes)\n")
    trace_file: Path | None = command.get("trace_file")
    history_file: Path | None = command.get("history_file")
    record_trace = settings.verbose or trace_file is not None
    outcome = simulate(settings.seed, options, system, record_trace=record_trace)
    result = outcome.result
    if options.check_determinism:
        check_determinism(result, options, system)
    lines = [format_event(event) for event in outcome.trace or []]
    if trace_file is not None:
        trace_file.write_text("".join(line + "\n" for line in lines))
    if history_file is not None:
        encoder = msgspec.json.Encoder()
        history_file.write_bytes(b"".join(encoder.encode(op) + b"\n" for op in outcome.history))
    try:
        _print(settings, options, result, outcome.environment, lines, outcome.fault_counts)
    except BrokenPipeError:  # e.g. `voprd --once -v | head`
        sys.stderr.close()
    return 0 if result.status == "ok" else 1


def _print(
    settings: Settings, options: RunOptions, result: SeedResult, environment: str,
    lines: list[str], fault_counts: dict[str, int],
) -> None:
    out = sys.stdout
    if settings.json:
        out.write(encode_event("iteration", iteration_data(result, options)).decode() + "\n")
    else:
        if settings.verbose:
            out.write(f"environment: {environment}\n")
            counts = " ".join(f"{kind}={n}" for kind, n in fault_counts.items())
            out.write(f"faults: {counts or 'none'}\n")
            out.writelines(line + "\n" for line in lines)
        out.write(summary_line(result) + "\n")
        if result.status == "failed":
            out.write(f"kind={result.kind} invariant={result.invariant}\n")
            out.write(f"message: {result.message}\n")
            out.write(f"reproduce: {reproduce_command(result.seed, options)}\n")
