"""A fake exit-status simulator for the exec target's tests: `fake_exit_sim.py SEED [FLAGS]`.

Without flags: seeds ending in 3 fail an assertion (exit 1, the message on stderr, with
seed-specific numbers and paths), seeds ending in 7 abort (SIGABRT), the rest pass (exit 0). Flags:

--env-dump DIR    write the environment it got (and what its VOPRD_STATE_DIR held) to
                  DIR/env-SEED.json, leave a directory in VOPRD_STATE_DIR, then pass
--grandchild DIR  start a grandchild (`sleep 1000`) first; its pid and this process's are written
                  to DIR as files `<pid>`, and the parent's (a daemon worker) as `parent-<pid>`
--setsid          ... and let that grandchild start a session of its own (a daemon-like escape)
--hang            then sleep for ever
--long-line MB    print one line of MB megabytes (in 1 MB writes, no newline until the end), pass
--flood           print lines for ever
--verbose-word W  print "verbose=W" (to check the {verbose} placeholder)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("seed", type=int)
    parser.add_argument("--env-dump")
    parser.add_argument("--grandchild")
    parser.add_argument("--setsid", action="store_true")
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--long-line", type=int, default=0)
    parser.add_argument("--flood", action="store_true")
    parser.add_argument("--verbose-word")
    args = parser.parse_args()
    seed = args.seed
    print(f"simulating seed {seed}", flush=True)
    if args.verbose_word is not None:
        print(f"verbose={args.verbose_word}", flush=True)
    if args.env_dump:
        state_dir = os.environ["VOPRD_STATE_DIR"]
        dump = {"environ": dict(os.environ), "state_dir_entries": sorted(os.listdir(state_dir))}
        with open(os.path.join(args.env_dump, f"env-{seed}.json"), "w") as handle:
            json.dump(dump, handle)
        os.makedirs(os.path.join(state_dir, "left", "behind"))  # the next run must not see it
        return 0
    if args.grandchild:
        sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=args.setsid)
        for name in (str(sleeper.pid), str(os.getpid()), f"parent-{os.getppid()}"):
            with open(os.path.join(args.grandchild, name), "w"):
                pass
    if args.hang:
        time.sleep(1000)
    if args.long_line:
        chunk = b"x" * (1024 * 1024)
        for _ in range(args.long_line):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.write(b"\nafter the long line\n")
        sys.stdout.flush()
        return 0
    if args.flood:
        line = b"flood " * 1000 + b"\n"
        while True:
            sys.stdout.buffer.write(line)
    if seed % 10 == 3:
        print(f"checking ledger of run {seed * 17}", flush=True)
        sys.stderr.write(f"assertion failed: balance {-seed} < 0 in /tmp/run-{seed}/ledger.c:"
                         f"{40 + seed} after {seed}ms\n")
        return 1
    if seed % 10 == 7:
        sys.stderr.write(f"journal checksum mismatch at offset {seed * 4096}\n")
        sys.stderr.flush()
        os.abort()
    return 0


if __name__ == "__main__":
    sys.exit(main())
