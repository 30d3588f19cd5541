#!/bin/sh
# A tiny simulator whose exit status is the verdict: voprd --exec-protocol exit-code.
#
#     tiny_sim.sh SEED [-v]
#
# One seed, one deterministic run: random transfers between three accounts, every choice drawn from
# a linear congruential generator seeded with SEED. Exit 0: every check held. Two planted bugs:
#   - the overdraft check compares with `-ge` against the amount minus one (an off-by-one), so on
#     some seeds a balance goes negative: the run prints an assertion to stderr and exits 1;
#   - a "corrupt journal" path calls abort (kill -ABRT itself) on rarer seeds, as a C assert() or a
#     Rust panic=abort would: voprd records a crash naming SIGABRT.
# With -v it narrates each transfer on stdout (shown by `voprd --once ... -v`).
set -eu

seed=${1:?usage: tiny_sim.sh SEED [-v]}
verbose=${2:-}
state=$(( seed % 2147483647 + 1 ))

next() {  # Park-Miller minimal standard generator: state <- state * 48271 mod (2^31 - 1)
    state=$(( state * 48271 % 2147483647 ))
}

a0=20 a1=20 a2=20
step=0
while [ "$step" -lt 20 ]; do
    step=$(( step + 1 ))
    next; from=$(( state % 3 ))
    next; to=$(( (from + 1 + state % 2) % 3 ))
    next; amount=$(( state % 6 + 1 ))
    eval "balance=\$a$from"
    # BUG (planted): should be `[ "$balance" -ge "$amount" ]`.
    if [ "$balance" -ge $(( amount - 1 )) ]; then
        eval "a$from=\$(( a$from - amount ))"
        eval "a$to=\$(( a$to + amount ))"
        [ "$verbose" = "-v" ] && echo "step $step: account $from pays $amount to account $to"
    fi
    eval "balance=\$a$from"
    if [ "$balance" -lt 0 ]; then
        echo "assertion failed: account $from balance $balance < 0 after step $step (seed $seed)" >&2
        exit 1
    fi
done
total=$(( a0 + a1 + a2 ))
if [ "$total" -ne 60 ]; then
    echo "assertion failed: money created or destroyed: total $total != 60" >&2
    exit 1
fi
next
if [ $(( state % 97 )) -eq 0 ]; then  # planted: a corrupt journal entry aborts the process
    echo "journal entry $step: checksum mismatch; aborting" >&2
    kill -ABRT $$
fi
[ "$verbose" = "-v" ] && echo "seed $seed: balances $a0 $a1 $a2, total $total"
exit 0
