"""Bound a RunPicture's size: keep full detail around the failure and at both ends of the run,
count the rest per time interval, and say in the picture what was collapsed.

Pure: takes a picture and limits, returns a new picture (the input is not modified).
"""

from __future__ import annotations

import msgspec

from voprd.report.model import ClientOp, Density, Message, NodeEvent, RunPicture, TimeWindow

# How many of the last operations of a longest linearizable order the focus window includes.
FOCUS_PREFIX_OPS = 8


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """How much a report draws individually; everything beyond is counted in `Density`."""

    messages_max: int = 20_000
    commits_max: int = 8_000
    # Node events other than commits (crashes, view changes, ...) and fault events are rare in a
    # healthy simulation; the bounds only guard against a runaway trace.
    node_events_max: int = 5_000
    faults_max: int = 2_000
    ops_max: int = 20_000
    density_buckets: int = 400
    text_chars_max: int = 300
    message_chars_max: int = 20_000
    # Share of each budget spent around the failure; the rest goes to the run's start and end.
    focus_share: float = 0.6

    def halved(self) -> Limits:
        return msgspec.structs.replace(
            self,
            messages_max=self.messages_max // 2,
            commits_max=self.commits_max // 2,
            node_events_max=self.node_events_max // 2,
            faults_max=self.faults_max // 2,
            ops_max=self.ops_max // 2,
            text_chars_max=max(40, self.text_chars_max // 2),
            message_chars_max=max(1_000, self.message_chars_max // 2),
        )


def focus_window(picture: RunPicture) -> TimeWindow | None:
    """The stretch of time the failure is about: the explanation's operations (its witness too),
    everything the failure names (`Verdict.cause_us`) and the moment it was detected, with a
    margin. None for a passing run with nothing to point at."""
    # The end of the explanation is what matters: the blocker and the last operations before it
    # (the order found may start at the beginning of the run).
    near: set[int] = set()
    for explanation in picture.linearizability.explanations:
        near.update(explanation.prefix[-FOCUS_PREFIX_OPS:])
        near.update(op for op in (explanation.blocker, explanation.witness) if op is not None)
    times: list[int] = list(picture.verdict.cause_us)
    for op in picture.ops:
        if op.id in near:
            times.append(op.call_us)
            if op.return_us is not None:
                times.append(op.return_us)
    if picture.verdict.failure_us is not None:
        times.append(picture.verdict.failure_us)
    if not times:
        return None
    end_us = max(picture.end_us(), 1)
    start, stop = min(times), max(times)
    margin_us = max((stop - start) // 4, end_us // 50, 1)
    label = "failure" if picture.verdict.status == "failed" else "explanation"
    return TimeWindow(
        start_us=max(0, start - margin_us), end_us=min(end_us, stop + margin_us), label=label
    )


def _select(times: list[int], budget: int, focus: TimeWindow | None, share: float) -> list[int]:
    """Indices (ascending) of the items to keep: up to `share` of the budget inside the focus
    window (nearest its centre first), the rest split between the earliest and latest others."""
    assert budget >= 0
    count = len(times)
    if count <= budget:
        return list(range(count))
    order = sorted(range(count), key=lambda i: (times[i], i))
    kept: list[int] = []
    outside = order
    if focus is not None:
        inside = [i for i in order if focus.start_us <= times[i] <= focus.end_us]
        outside = [i for i in order if not focus.start_us <= times[i] <= focus.end_us]
        inside_budget = max(int(budget * share), budget - len(outside))
        if len(inside) > inside_budget:
            centre = (focus.start_us + focus.end_us) // 2
            inside = sorted(inside, key=lambda i: (abs(times[i] - centre), i))[:inside_budget]
        kept.extend(inside)
    rest = budget - len(kept)
    if len(outside) <= rest:
        kept.extend(outside)
    else:
        head = rest // 2
        kept.extend(outside[:head])
        kept.extend(outside[len(outside) - (rest - head):])
    kept.sort()
    assert len(kept) <= budget
    return kept


def _clip(text: str, chars_max: int) -> str:
    if len(text) <= chars_max:
        return text
    return text[:chars_max] + f"… ({len(text) - chars_max} more characters)"


def _fmt_ms(time_us: int) -> str:
    return f"{time_us / 1000:.3f} ms"


def collapse(picture: RunPicture, limits: Limits) -> RunPicture:
    """A copy of `picture` within `limits`, with `focus`, `density` and `notes` filled in."""
    end_us = max(picture.end_us(), 1)
    focus = focus_window(picture)
    notes = list(picture.notes)
    buckets = max(1, limits.density_buckets)
    bucket_us = max(1, -(-end_us // buckets))
    buckets = -(-(end_us + 1) // bucket_us)
    density = Density(
        start_us=0,
        bucket_us=bucket_us,
        messages=[0] * buckets,
        dropped=[0] * buckets,
        commits=[0] * buckets,
        collapsed_messages=[0] * buckets,
        collapsed_commits=[0] * buckets,
    )

    def bucket(time_us: int) -> int:
        return min(buckets - 1, max(0, time_us // bucket_us))

    # Messages.
    message_times = [m.send_us for m in picture.messages]
    kept_message_ids = _select(message_times, limits.messages_max, focus, limits.focus_share)
    kept_message_set = set(kept_message_ids)
    for index, message in enumerate(picture.messages):
        b = bucket(message.send_us)
        density.messages[b] += 1
        if message.status == "dropped":
            density.dropped[b] += 1
        if index not in kept_message_set:
            density.collapsed_messages[b] += 1
    messages: list[Message] = []
    clipped_texts = 0
    for index in kept_message_ids:
        message = picture.messages[index]
        detail = _clip(message.detail, limits.text_chars_max)
        clipped_texts += detail != message.detail
        messages.append(msgspec.structs.replace(message, detail=detail))
    collapsed_messages = len(picture.messages) - len(messages)
    if collapsed_messages:
        notes.append(
            f"{len(messages)} of {len(picture.messages)} messages are drawn individually"
            + (
                f": all sent in {_fmt_ms(focus.start_us)}–{_fmt_ms(focus.end_us)} around the "
                f"{focus.label} (or the nearest to it), and the earliest and latest others"
                if focus is not None
                else ": the earliest and the latest"
            )
            + f". The other {collapsed_messages} are counted per {_fmt_ms(bucket_us)} interval "
            "in the overview strip and shown as grey hatched stretches in the replica diagram."
        )

    # Node events: commits have their own budget; the rest share another.
    commit_ids = [i for i, e in enumerate(picture.node_events) if e.kind == "commit"]
    other_ids = [i for i, e in enumerate(picture.node_events) if e.kind != "commit"]
    kept_commits = [
        commit_ids[i]
        for i in _select(
            [picture.node_events[i].time_us for i in commit_ids],
            limits.commits_max, focus, limits.focus_share,
        )
    ]
    kept_others = [
        other_ids[i]
        for i in _select(
            [picture.node_events[i].time_us for i in other_ids],
            limits.node_events_max, focus, limits.focus_share,
        )
    ]
    kept_commit_set = set(kept_commits)
    for index in commit_ids:
        b = bucket(picture.node_events[index].time_us)
        density.commits[b] += 1
        if index not in kept_commit_set:
            density.collapsed_commits[b] += 1
    node_events: list[NodeEvent] = []
    for index in sorted(kept_commits + kept_others):
        event = picture.node_events[index]
        detail = _clip(event.detail, limits.text_chars_max)
        clipped_texts += detail != event.detail
        node_events.append(msgspec.structs.replace(event, detail=detail))
    if len(kept_commits) < len(commit_ids):
        notes.append(
            f"{len(kept_commits)} of {len(commit_ids)} commit events are drawn; the others are "
            "counted per interval in the overview strip."
        )
    if len(kept_others) < len(other_ids):
        notes.append(
            f"{len(kept_others)} of {len(other_ids)} replica events other than commits are "
            "drawn (those nearest the failure and at both ends of the run)."
        )

    # Fault events and client operations: the highlighted operations are always kept.
    kept_fault_ids = _select(
        [f.start_us for f in picture.faults], limits.faults_max, focus, limits.focus_share
    )
    faults = [
        msgspec.structs.replace(
            picture.faults[i], detail=_clip(picture.faults[i].detail, limits.text_chars_max)
        )
        for i in kept_fault_ids
    ]
    if len(faults) < len(picture.faults):
        notes.append(f"{len(faults)} of {len(picture.faults)} fault events are shown.")
    highlighted = set(picture.linearizability.highlighted_ops())
    must_ops = [i for i, op in enumerate(picture.ops) if op.id in highlighted]
    other_ops = [i for i, op in enumerate(picture.ops) if op.id not in highlighted]
    kept_other_ops = [
        other_ops[i]
        for i in _select(
            [picture.ops[i].call_us for i in other_ops],
            max(0, limits.ops_max - len(must_ops)), focus, limits.focus_share,
        )
    ]
    ops: list[ClientOp] = []
    for index in sorted(must_ops + kept_other_ops):
        op = picture.ops[index]
        if isinstance(op.value, str) and len(op.value) > limits.text_chars_max:
            op = msgspec.structs.replace(op, value=_clip(op.value, limits.text_chars_max))
            clipped_texts += 1
        if isinstance(op.output, str) and len(op.output) > limits.text_chars_max:
            op = msgspec.structs.replace(op, output=_clip(op.output, limits.text_chars_max))
            clipped_texts += 1
        ops.append(op)
    if len(ops) < len(picture.ops):
        notes.append(
            f"{len(ops)} of {len(picture.ops)} client operations are shown: every operation in "
            "the explanation, those nearest the failure, and the earliest and latest others."
        )
    if clipped_texts:
        notes.append(
            f"{clipped_texts} long values or details were shortened to "
            f"{limits.text_chars_max} characters."
        )
    verdict = picture.verdict
    if verdict.message is not None and len(verdict.message) > limits.message_chars_max:
        verdict = msgspec.structs.replace(
            verdict, message=_clip(verdict.message, limits.message_chars_max)
        )
        notes.append("The verdict message was shortened.")
    if not notes:
        notes.append("Nothing was collapsed: every event of the run is drawn.")
    return msgspec.structs.replace(
        picture,
        verdict=verdict,
        ops=ops,
        messages=messages,
        node_events=node_events,
        faults=faults,
        focus=focus,
        density=density,
        notes=notes,
    )
