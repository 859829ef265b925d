"""The tail-sampling exercise measured on the real collector's `tail_sampling`
processor, and the terminal runner's imitation of it on the same traffic.

400 requests go through the chain, 6 at a time. A recording relay
(otlp_relay.py) keeps every span the hops sent, so each trace's truth is
known whether or not the collector keeps it: an error in any span, its
duration from the first span's start to the last one's end (what the
`latency` policy measures), its span count. lab-tail-sampling
(lab/src/trace/replay.rs) reads those recorded requests and says, per
trace, what the runner's imitation decides and why, and gives the facts
above. Then Tempo is asked for every trace:
- every trace with an error is kept, and every trace at or above the
  latency threshold;
- of the fast OK traces, the kept share is within Z_TOLERANCE standard
  deviations of the configured percentage (binomial: trace ids are random,
  the processor hashes them);
- every kept trace has every span the hops sent for it.
"""

import json
import math
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from otlp_relay import OtlpRelay
from support import Failure, checks, http, say, trace_id_of, wait_until

REQUESTS = 400
CONCURRENCY = 6
# How many standard deviations of the binomial the fast OK traces' kept share
# may be from the configured percentage: a false failure about once in 2,000
# runs. With some 280 fast OK traces of 400 and 10 % configured, ±6.3 points.
Z_TOLERANCE = 3.5
RECORD_TIMEOUT = 60
TEMPO_TIMEOUT = 30  # after the decision wait


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    raise Failure(f"tail_sampling.decision_wait {text!r} is not a duration this check reads")


def policy_values(settings: dict[str, Any]) -> tuple[float, float, float]:
    """The latency threshold (ms), the probabilistic percentage and the
    decision wait (s) of the processor's settings."""
    sampling = settings.get("processors", {}).get("tail_sampling")
    if not sampling:
        raise Failure("the collector's settings have no processors.tail_sampling")
    by_type = {p.get("type"): p for p in sampling.get("policies", [])}
    missing = {"status_code", "latency", "probabilistic"} - set(by_type)
    if missing:
        raise Failure(f"tail_sampling has no {sorted(missing)} policy, which this check measures")
    return (
        float(by_type["latency"]["latency"]["threshold_ms"]),
        float(by_type["probabilistic"]["probabilistic"]["sampling_percentage"]),
        duration_seconds(str(sampling.get("decision_wait", "30s"))),
    )


def send(entry_url: str) -> dict[str, int]:
    """REQUESTS requests, CONCURRENCY at a time: their trace ids and statuses."""

    def one(_: int) -> tuple[str, int]:
        status, headers, _body = http(entry_url, timeout=30)
        return trace_id_of(headers), status

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(one, range(REQUESTS)))
    untraced = [status for trace_id, status in answers if not trace_id]
    if untraced:
        raise Failure(f"{len(untraced)} answers without a traceresponse header (statuses {untraced[:10]})")
    return dict(answers)


def replay(relay: OtlpRelay, settings: dict[str, Any], replay_bin: Path, scratch: Path) -> dict[str, dict[str, Any]]:
    """What lab-tail-sampling says of the traffic the relay recorded, by trace id."""
    exports = scratch / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    for old in exports.iterdir():
        old.unlink()
    files = []
    for index, body in enumerate(relay.requests()):
        path = exports / f"{index:05d}.pb"
        path.write_bytes(body)
        files.append(str(path))
    settings_file = scratch / "tail_sampling.json"
    settings_file.write_text(json.dumps(settings["processors"]["tail_sampling"]))
    proc = subprocess.run([str(replay_bin), str(settings_file), *files], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Failure(f"lab-tail-sampling failed: {proc.stderr.strip()}")
    decisions = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {d["traceId"]: d for d in decisions}


def tempo_span_counts(tempo_url: str, trace_ids: list[str]) -> dict[str, int]:
    """Spans Tempo has of each trace (0: not found)."""

    def count(trace_id: str) -> tuple[str, int]:
        status, _, body = http(f"{tempo_url}/api/traces/{trace_id}")
        if status == 404:
            return trace_id, 0
        if status != 200:
            raise Failure(f"Tempo answered {status} for trace {trace_id}: {body[:300]}")
        return trace_id, len(checks.spans_of(json.loads(body)))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(count, trace_ids))


def share_text(kept: int, total: int) -> str:
    return f"{kept}/{total} ({100 * kept / total:.1f} %)" if total else "0/0"


def measure(
    tempo_url: str,
    entry_url: str,
    hops: list[checks.Hop],
    settings: dict[str, Any],
    relay: OtlpRelay,
    replay_bin: Path,
    scratch: Path,
    alive: Callable[[], bool],
) -> None:
    threshold_ms, percentage, decision_wait = policy_values(settings)
    expected_spans = checks.expected_span_count(hops)

    started = time.monotonic()
    statuses = send(entry_url)
    unexpected = {s for s in statuses.values() if s not in (200, 502)}
    if unexpected:
        raise Failure(f"answers other than 200 and 502 (an injected failure): {sorted(unexpected)}")
    say(f"  {len(statuses)} requests sent in {time.monotonic() - started:.1f} s")

    # Every span of every request, as the hops sent it (an OK trace has all
    # the chain's spans; a failed one fewer, or more).
    truth: dict[str, dict[str, Any]] = {}

    def all_recorded() -> bool:
        nonlocal truth
        alive()
        if relay.failures:
            raise Failure(f"the relay could not pass requests on to the collector: {relay.failures[:5]}")
        truth = replay(relay, settings, replay_bin, scratch)
        return all(
            trace_id in truth and (status != 200 or truth[trace_id]["spans"] >= expected_spans)
            for trace_id, status in statuses.items()
        )

    wait_until("every span of every request recorded on its way to the collector", RECORD_TIMEOUT, all_recorded)
    recorded_at = time.monotonic()
    broken = [t for t, s in statuses.items() if s == 200 and truth[t]["spans"] != expected_spans]
    if broken:
        raise Failure(f"OK requests whose hops sent other than {expected_spans} spans: {broken[:5]}")

    errors = [t for t in statuses if truth[t]["error"]]
    slow = [t for t in statuses if not truth[t]["error"] and truth[t]["durationMs"] >= threshold_ms]
    fast = [t for t in statuses if not truth[t]["error"] and truth[t]["durationMs"] < threshold_ms]
    must_keep = errors + slow

    # The collector decides a trace decision_wait after its first span; all
    # spans were in when recording ended, so every decision is out (and past
    # the batch processor) a few seconds after that.
    settled = recorded_at + decision_wait + 3
    counts: dict[str, int] = {}

    def decided() -> bool:
        nonlocal counts
        alive()
        counts = tempo_span_counts(tempo_url, list(statuses))
        return time.monotonic() >= settled and all(counts[t] >= truth[t]["spans"] for t in must_keep)

    # Past the timeout the figures are still worth printing: they say what is missing.
    waited = ""
    try:
        wait_until("every error and slow trace complete in Tempo", decision_wait + TEMPO_TIMEOUT, decided, 1)
    except Failure as failure:
        if len(counts) != len(statuses) or "still not so" not in str(failure):
            raise  # not the timeout: Tempo or a process failed
        waited = str(failure)

    kept = {t for t in statuses if counts[t] > 0}
    incomplete = sorted(t for t in kept if counts[t] != truth[t]["spans"])
    fast_kept = sum(t in kept for t in fast)
    configured = percentage / 100
    tolerance = Z_TOLERANCE * math.sqrt(configured * (1 - configured) / len(fast)) if fast else 0.0
    fast_share = fast_kept / len(fast) if fast else 0.0
    imitation_fast = sum(truth[t]["kept"] for t in fast)

    say(f"  sent: {len(statuses)} requests ({sum(s == 502 for s in statuses.values())} answered 502)")
    say(f"  errors kept: {share_text(sum(t in kept for t in errors), len(errors))}")
    say(f"  slow (>= {threshold_ms:g} ms) kept: {share_text(sum(t in kept for t in slow), len(slow))}")
    say(
        f"  fast OK kept: {share_text(fast_kept, len(fast))}, configured {percentage:g} %"
        f" ± {100 * tolerance:.1f} points ({Z_TOLERANCE:g} σ of a binomial over {len(fast)})"
    )
    say(f"  kept traces missing spans: {len(incomplete)} of {len(kept)}")
    for name, group in (("errors", errors), ("slow", slow), ("fast OK", fast)):
        agree = sum(truth[t]["kept"] == (t in kept) for t in group)
        say(f"  runner's imitation agrees on {name}: {share_text(agree, len(group))}")
    say(f"  runner's imitation keeps of fast OK: {share_text(imitation_fast, len(fast))}")

    problems = [waited] if waited else []
    if not errors or not slow or not fast:
        problems.append(f"the traffic lacks a kind: {len(errors)} errors, {len(slow)} slow, {len(fast)} fast OK")
    for name, group in (("error", errors), ("slow", slow)):
        dropped = [t for t in group if t not in kept]
        if dropped:
            problems.append(f"{len(dropped)} {name} traces not kept, e.g. {dropped[:3]}")
        imitation_dropped = [t for t in group if not truth[t]["kept"]]
        if imitation_dropped:
            problems.append(f"the runner's imitation drops {len(imitation_dropped)} {name} traces")
    if abs(fast_share - configured) > tolerance:
        problems.append(f"fast OK traces kept: {100 * fast_share:.1f} %, not {percentage:g} ± {100 * tolerance:.1f}")
    if fast and abs(imitation_fast / len(fast) - configured) > tolerance:
        problems.append(f"the runner's imitation keeps {share_text(imitation_fast, len(fast))} of fast OK traces")
    if incomplete:
        problems.append(f"kept traces missing spans: {[(t, counts[t], truth[t]['spans']) for t in incomplete[:5]]}")
    if problems:
        raise Failure("; ".join(problems))
