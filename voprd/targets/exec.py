"""The `exec` target: supervise an external VOPR binary that speaks voprd's JSON-lines protocol.

For each batch it runs `CMD ARGS --json --seed S -n B` and turns its `iteration` lines into results
as they arrive. Non-JSON lines are logged (to stderr, as JSON log lines), never fatal. Seeds the
binary did not report (it died mid-batch) are re-run once each, alone; a seed still unreported after
that is a `crash` result. The child gets a fresh VOPRD_STATE_DIR per run, so voprd itself can be the
external binary without its bounded runs colliding in one checkpoint.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator, Sequence

import msgspec

from voprd.events import FailureKind, SeedResult, decode_event, iteration_from_data
from voprd.options import RunOptions

LOGGED_LINE_CHARS_MAX = 500
OUTPUT_LINES_MAX = 1_000_000  # per invocation: explicit bound on what we read
_log_encoder = msgspec.json.Encoder()
_KINDS: dict[str, FailureKind] = {
    "invariant": "invariant", "liveness": "liveness", "crash": "crash", "timeout": "timeout",
    "oom": "oom", "nondeterminism": "nondeterminism",
}


def contiguous_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, count)] covering `seeds` (ascending, distinct) with maximal contiguous runs."""
    runs: list[tuple[int, int]] = []
    for seed in sorted(seeds):
        if runs and runs[-1][0] + runs[-1][1] == seed:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seed, 1))
    return runs


def _log(event: str, **fields: object) -> None:
    line = _log_encoder.encode({"event": event, "logger": "voprd.exec", **fields})
    sys.stderr.write(line.decode() + "\n")
    sys.stderr.flush()


class ExecTarget:
    name = "exec"

    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)
        assert self.argv, "empty --exec command"

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        return next(iter(self.run_batch([seed], options)))

    def run_batch(self, seeds: Sequence[int], options: RunOptions) -> Iterator[SeedResult]:
        missing: list[int] = []
        for start, count in contiguous_runs(seeds):
            reported: set[int] = set()
            exit_code = yield from self._invoke(start, count, reported)
            lost = [seed for seed in range(start, start + count) if seed not in reported]
            if lost:
                _log("exec_seeds_unreported", start=start, count=count, exit_code=exit_code,
                     seeds=lost[:20], rerun="once each")
            missing += lost
        for seed in missing:
            reported = set()
            exit_code = yield from self._invoke(seed, 1, reported)
            if seed not in reported:
                yield SeedResult(
                    seed=seed, status="failed", kind="crash",
                    message=f"external command exited with code {exit_code} without reporting "
                            f"seed {seed} (twice): {shlex.join(self.argv)}",
                )

    def _invoke(
        self, start: int, count: int, reported: set[int]
    ) -> Generator[SeedResult, None, int]:
        # Returns the exit code (a generator's return value) after yielding each reported seed.
        argv = [*self.argv, "--json", "--seed", str(start), "-n", str(count)]
        with tempfile.TemporaryDirectory(prefix="voprd-exec-") as state_dir:
            env = {**os.environ, "VOPRD_STATE_DIR": state_dir}
            with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as proc:
                assert proc.stdout is not None
                for line_count, raw in enumerate(proc.stdout):
                    if line_count >= OUTPUT_LINES_MAX:
                        proc.kill()
                        break
                    result = self._parse(raw, start, count)
                    if result is not None and result.seed not in reported:
                        reported.add(result.seed)
                        yield result
                exit_code = proc.wait()
        return exit_code

    @staticmethod
    def _parse(raw: bytes, start: int, count: int) -> SeedResult | None:
        line = raw.strip()
        if not line:
            return None
        try:
            envelope = decode_event(line)
            if envelope.type != "iteration":
                return None
            data = iteration_from_data(envelope.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            text = line[:LOGGED_LINE_CHARS_MAX].decode(errors="replace")
            _log("exec_output_not_protocol", line=text)
            return None
        if not start <= data.seed < start + count:
            _log("exec_seed_out_of_range", seed=data.seed, start=start, count=count)
            return None
        return SeedResult(
            seed=data.seed, status=data.status, events=data.events,
            simulated_time_ms=data.simulated_time_ms, trace_hash=data.trace_hash,
            kind=_KINDS.get(data.kind or ""),
            invariant=data.invariant, message=data.message,
        )
