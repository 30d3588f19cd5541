"""The process that renders one failure's HTML report for the daemon.

`python -m voprd.service.report_worker JOB_JSON` (a `ReportJob`) writes the page
(`voprd.report.build_report`, which reruns the seed with recording) to stdout. It runs outside
the daemon's main process, which must stay responsive; the daemon kills it on timeout or drain.
"""

from __future__ import annotations

import sys

import msgspec

from voprd.options import RunOptions


class ReportJob(msgspec.Struct, kw_only=True):
    seed: int
    options: RunOptions


def main(argv: list[str]) -> int:
    from voprd.report import build_report

    assert len(argv) == 1, "usage: python -m voprd.service.report_worker JOB_JSON"
    job = msgspec.json.decode(argv[0], type=ReportJob)
    sys.stdout.buffer.write(build_report(job.seed, job.options).encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
