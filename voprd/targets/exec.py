"""The `exec` target: run a team's own simulator binary, seed by seed, whatever it is written in.

`--exec-protocol json-lines` (default): the binary speaks the VOPR JSON lines (voprd.targets.
exec_protocol reads them leniently). A batch of contiguous seeds is one invocation (`CMD --json
--seed S -n B`, or the `--exec` template); each `iteration` line becomes a result as it arrives.
Seeds the binary did not report (it died mid-batch) are run again once each, alone; a seed still
unreported after that is a `crash` result carrying how the process ended and its last output.

`--exec-protocol exit-code`: one invocation per seed (`--exec "sim {seed}"`); the exit status is
the verdict (voprd.targets.exec_protocol.exit_status_result).

Every invocation runs in its own process group with a minimal environment and bounded output
(voprd.targets.exec_process); nothing it started survives it. What the binary prints that voprd
cannot use is logged, once per kind of problem (then at 10, 100, ... occurrences), never fatal.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator, Sequence
from typing import Any, BinaryIO, NamedTuple

import structlog

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.targets.exec_command import ExecCommand, ExecCommandError, check_command, parse_command
from voprd.targets.exec_process import ExternalProcess, StartFailed, StateDir
from voprd.targets.exec_protocol import (
    Ignored,
    OutputTail,
    Problem,
    Report,
    describe_exit,
    excerpt,
    exit_status_result,
    read_line,
    unreported_result,
)

UNREPORTED_LOGGED_MAX = 20


def contiguous_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, count)] covering `seeds` (ascending, distinct) with maximal contiguous runs."""
    runs: list[tuple[int, int]] = []
    for seed in sorted(seeds):
        if runs and runs[-1][0] + runs[-1][1] == seed:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seed, 1))
    return runs


class ProblemLog:
    """Logs each kind of problem with an external binary's output at its 1st, 10th, 100th, ...
    occurrence (with the count): a binary printing noise on every line cannot flood the log."""

    def __init__(self) -> None:
        self._log = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
        ).bind(logger="voprd.exec")
        self.counts: dict[str, int] = {}

    def note(self, event: str, msg: str, **fields: Any) -> None:
        count = self.counts.get(event, 0) + 1
        self.counts[event] = count
        if _is_power_of_ten(count):
            more = " (logged at the 1st, 10th, 100th, ... occurrence)" if count == 1 else ""
            self._log.warning(event, msg=msg + more, occurrences=count, **fields)


def _is_power_of_ten(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1


class ExecTarget:
    name = "exec"

    def __init__(self, command: str) -> None:
        if not command:
            raise ExecCommandError("--exec: --target exec needs a command (--exec CMD)")
        self.template = command
        self.problems = ProblemLog()
        self._commands: dict[str, ExecCommand] = {}
        self._state_dir = StateDir()

    def command(self, options: RunOptions) -> ExecCommand:
        protocol = options.exec_protocol
        if protocol not in self._commands:
            self._commands[protocol] = parse_command(self.template, protocol)
        return self._commands[protocol]

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        (result,) = self.run_batch([seed], options)  # to the end: its process is over
        return result

    def run_batch(self, seeds: Sequence[int], options: RunOptions) -> Iterator[SeedResult]:
        command = self.command(options)
        if command.protocol == "exit-code":
            for seed in sorted(seeds):
                yield self.run_exit_code(command, seed, options)
            return
        runs = ([(seed, 1) for seed in sorted(seeds)] if command.one_seed_per_process
                else contiguous_runs(seeds))
        missing: list[int] = []
        for start, count in runs:
            reported: set[int] = set()
            ending = yield from self._invoke_json(command, start, count, reported, options)
            lost = [seed for seed in range(start, start + count) if seed not in reported]
            if lost:
                self.problems.note(
                    "exec_seeds_unreported", f"the external command {ending.how} without "
                    f"reporting {len(lost)} of its {count} seed(s); each runs again alone",
                    start=start, count=count, seeds=lost[:UNREPORTED_LOGGED_MAX],
                )
            missing += lost
        for seed in missing:
            reported = set()
            ending = yield from self._invoke_json(command, seed, 1, reported, options)
            if seed not in reported:
                yield _unreported(seed, ending)

    # --- json-lines ---------------------------------------------------------------------------

    def _invoke_json(
        self, command: ExecCommand, start: int, count: int, reported: set[int],
        options: RunOptions, *, verbose: bool = False, echo: BinaryIO | None = None,
    ) -> Generator[SeedResult, None, _Ending]:
        """Run seeds start..start+count-1 in one process, yielding each reported seed once."""
        tail = OutputTail()
        problem: str | None = None
        try:
            process = ExternalProcess(command.argv(start, count, verbose),
                                      self._state_dir.fresh(), options.exec_env, echo=echo)
        except StartFailed as exc:
            self.problems.note("exec_start_failed", str(exc), start=start, count=count)
            return _Ending(how="could not be started", tail=[], problem=None,
                           start_error=str(exc))
        with process:
            for raw, cut in process.lines():
                if cut:
                    self.problems.note("exec_line_cut", "an output line was longer than the "
                                       "line bound; the rest of it was dropped",
                                       excerpt=excerpt(raw))
                line = read_line(raw)
                if isinstance(line, Report):
                    result = self._accept(line, start, count, reported, tail)
                    if result is not None:
                        process.seed_reported()
                        tail.clear()
                        yield result
                        if len(reported) == count:
                            process.finish_soon()
                elif isinstance(line, Problem):
                    tail.add(raw)
                    if line.kind != "not_json":  # JSON that is not a usable line: say why
                        problem = f"{line.kind}: {line.detail}"
                    if echo is None or line.kind != "not_json":  # a replay shows its noise
                        self.problems.note("exec_output_not_protocol", "a line of the external "
                                           "command's output is not a VOPR JSON line",
                                           problem=line.kind, line=line.detail)
                elif isinstance(line, Ignored) and not line.known:
                    self.problems.note("exec_unknown_line_type", "a JSON line of an unknown "
                                       "type was ignored", type=line.type)
        assert process.returncode is not None
        how = describe_exit(process.returncode)
        if process.stopped == "output":
            how = "printed more output than the per-seed bound and was stopped"
            self.problems.note("exec_output_limit", f"the external command {how}",
                               start=start, count=count)
        elif process.stopped == "finished" and len(reported) < count:
            how = "was stopped after its output went quiet"
        return _Ending(how=how, tail=tail.lines(), problem=problem, start_error=None)

    def _accept(
        self, report: Report, start: int, count: int, reported: set[int], tail: OutputTail
    ) -> SeedResult | None:
        if not start <= report.seed < start + count:
            self.problems.note("exec_seed_out_of_range", "an iteration line reported a seed "
                               "that was not asked for; ignored", seed=report.seed,
                               start=start, count=count)
            return None
        if report.seed in reported:
            self.problems.note("exec_seed_duplicate", "a seed was reported twice; the first "
                               "report counts", seed=report.seed)
            return None
        if report.dropped_fields:
            self.problems.note("exec_fields_dropped", "an iteration line had optional fields "
                               "of the wrong type or out of range; they were dropped",
                               seed=report.seed, fields=list(report.dropped_fields))
        reported.add(report.seed)
        return SeedResult(
            seed=report.seed, status="ok" if report.ok else "failed", events=report.events,
            simulated_time_ms=report.simulated_time_ms, trace_hash=report.trace_hash,
            kind=report.kind, invariant=report.invariant, message=report.message,
            trace_tail=[] if report.ok else tail.lines(),
        )

    # --- exit-code ----------------------------------------------------------------------------

    def run_exit_code(
        self, command: ExecCommand, seed: int, options: RunOptions, *, verbose: bool = False,
        echo: BinaryIO | None = None,
    ) -> SeedResult:
        tail = OutputTail()
        try:
            process = ExternalProcess(command.argv(seed, 1, verbose), self._state_dir.fresh(),
                                      options.exec_env, echo=echo)
        except StartFailed as exc:
            return SeedResult(seed=seed, status="failed", kind="crash", message=str(exc))
        with process:
            for raw, _cut in process.lines():
                tail.add(raw)
        assert process.returncode is not None
        if process.stopped == "output":
            return SeedResult(
                seed=seed, status="failed", kind="crash",
                message="printed more output than the per-seed bound and was stopped",
                trace_tail=tail.lines(),
            )
        return exit_status_result(seed, process.returncode, tail.lines())

    # --- replay -------------------------------------------------------------------------------

    def replay(
        self, seed: int, options: RunOptions, *, verbose: bool, echo: BinaryIO
    ) -> SeedResult:
        """Run `seed` alone, its output copied to `echo` as it comes, and return its verdict."""
        command = self.command(options)
        if command.protocol == "exit-code":
            return self.run_exit_code(command, seed, options, verbose=verbose, echo=echo)
        results: list[SeedResult] = []
        ending = yield_into(results, self._invoke_json(command, seed, 1, set(), options,
                                                       verbose=verbose, echo=echo))
        return results[0] if results else _unreported(seed, ending)


class _Ending(NamedTuple):
    """How an invocation ended: for the messages of seeds it did not report."""

    how: str
    tail: list[str]
    problem: str | None
    start_error: str | None  # the process could not be started: why


def _unreported(seed: int, ending: _Ending) -> SeedResult:
    if ending.start_error is not None:
        return SeedResult(seed=seed, status="failed", kind="crash", message=ending.start_error)
    return unreported_result(seed, ending.how, ending.tail, ending.problem)


def yield_into(sink: list[SeedResult], generator: Generator[SeedResult, None, _Ending]) -> _Ending:
    """Run `generator` to its end, collecting what it yields; returns its return value."""
    while True:
        try:
            sink.append(next(generator))
        except StopIteration as stop:
            ending: _Ending = stop.value
            return ending


def replay_main(seed: int, options: RunOptions, *, verbose: bool, json: bool) -> SeedResult | str:
    """`voprd --once --target exec`: check the command (a one-line error string if it cannot
    work), then run the seed with its output shown verbatim (on stderr under --json, where stdout
    carries voprd's own iteration line)."""
    try:
        check_command(options.exec_cmd, options.exec_protocol, options.exec_env)
    except ExecCommandError as exc:
        return str(exc)
    assert options.exec_cmd
    echo = sys.stderr.buffer if json else sys.stdout.buffer
    return ExecTarget(options.exec_cmd).replay(seed, options, verbose=verbose, echo=echo)
