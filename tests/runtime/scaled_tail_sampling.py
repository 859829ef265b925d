#!/usr/bin/env python3
"""Tail sampling scaled out, on real collectors: whole traces when the first
tier routes by trace id, cut traces when it routes by service.

The lab VM's specialisations `tail-sampling-scaled` and
`tail-sampling-scaled-by-service` are evaluated (../shared/nix-eval/check-flake):
the first tier's collector settings, the two tail-sampling collectors'
(services.tracing-lab.collector.tailSampling.samplerSettings), Tempo's settings
and the hops' environment. For each, it starts exactly those: three real
collectors (../shared/lab-runtime/otelcol 0.156.0), a real Tempo 2.10.8 and the
chain of the `microservice` binary; sends requests; waits until every sampler
has decided on every trace part it got and Tempo holds every span the samplers
sent; then counts, per request's trace, the spans in Tempo.

Every request of this chain is slower than the exercise's latency policy, so:
- routed by trace id, every trace is kept, and whole (the chain's span count);
- routed by service, a sampler holding only part of a trace judges the part:
  some traces come out cut (some spans kept, others dropped). It prints how
  many out of how many, and fails unless at least one is.

Only these differ from the lab: Tempo's state lives in a temporary directory,
the processes run as root from this machine's PATH, not as systemd units, and
Prometheus does not run (Tempo's metrics go nowhere). Run it in a network
namespace of its own: it binds the lab's fixed ports.

usage: tests/runtime/scaled_tail_sampling.py [--requests N]
"""

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nixos_lab import host_port, process_env
from support import (
    RUNTIME,
    TEMPO_RUNNER,
    Failure,
    Processes,
    check_flake_eval,
    check_ports_free,
    check_tempo,
    checks,
    http,
    say,
    service_binary,
    tempo_spans,
    terminated_like_interrupted,
    trace_id_of,
    wait_until,
)

OTELCOL = RUNTIME / "otelcol"
OTELCOL_VERSION = "0.156.0"
TEMPO_VERSION = "2.10.8"
READY_TIMEOUT = 120  # as nixos_lab.py: Tempo is slow to start on a loaded machine
# The samplers wait `decision_wait` (5 s) after a trace's first span; the rest
# is batching, export and Tempo's ingestion, under load.
SETTLE_TIMEOUT = 60

# The exercise and its variant, by the first tier's routing key.
EXERCISES = {"traceID": "tail-sampling-scaled", "service": "tail-sampling-scaled-by-service"}

EXPRESSION = """
let
  vm = o.nixosConfigurations.lab.config;
  of = name:
    let c = vm.specialisation.${name}.configuration; in {
      collector = c.services.opentelemetry-collector.settings;
      samplers = c.services.tracing-lab.collector.tailSampling.samplerSettings;
      tempo = c.services.tempo.settings;
      lab = builtins.fromJSON c.environment.etc."tracing-lab/lab.json".text;
      hops = lib.mapAttrs (_: unit: unit.environment)
        (lib.filterAttrs (name: _: lib.hasPrefix "microservice-" name) c.systemd.services);
    };
in
lib.mapAttrs (_: of) { %s }
""" % " ".join(f'"{key}" = "{name}";' for key, name in EXERCISES.items())

# The collector's own metrics when its settings leave them at the default.
DEFAULT_TELEMETRY = ("127.0.0.1", 8888)


def moved_state(value: Any, state: Path) -> Any:
    """Tempo's settings with /var/lib/tempo moved under `state`."""
    if isinstance(value, dict):
        return {k: moved_state(v, state) for k, v in value.items()}
    if isinstance(value, list):
        return [moved_state(v, state) for v in value]
    if isinstance(value, str) and value.startswith("/var/lib/tempo"):
        return str(state) + value[len("/var/lib/tempo") :]
    return value


def telemetry_of(settings: dict[str, Any]) -> tuple[str, int]:
    """Where a collector serves its own metrics, by its settings."""
    readers = settings.get("service", {}).get("telemetry", {}).get("metrics", {}).get("readers", [])
    for reader in readers:
        prometheus = reader.get("pull", {}).get("exporter", {}).get("prometheus")
        if prometheus:
            return str(prometheus["host"]), int(prometheus["port"])
    return DEFAULT_TELEMETRY


def metric(url: str, name: str, labels: str = "") -> float:
    """The sum of a collector's counter `name` (with or without `_total`) over
    the series whose labels contain `labels`; 0 while it has none."""
    status, _, body = http(url, timeout=5)
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.splitlines():
        found = re.match(rf"^{name}(?:_total)?(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if found and labels in (found.group(1) or ""):
            total += float(found.group(2))
    return total


def run_variant(
    key: str, system: dict[str, Any], requests: int, tempo_url: str, work: Path, procs: Processes
) -> tuple[int, int, int]:
    """Runs the two tiers and the chain for one routing key; (kept whole, cut,
    dropped whole) out of `requests` traces."""
    say(f"routing_key: {key} ({EXERCISES[key]})")
    first: dict[str, Any] = system["collector"]
    samplers: dict[str, dict[str, Any]] = system["samplers"]
    if first["exporters"]["loadbalancing"]["routing_key"] != key or len(samplers) != 2:
        raise Failure(
            f"{EXERCISES[key]}: expected a first tier routing by {key} to 2 samplers,"
            f" got {first['exporters']} and {list(samplers)}"
        )
    collectors = {**samplers, "first-tier": first}
    telemetry = {name: "http://%s:%d/metrics" % telemetry_of(settings) for name, settings in collectors.items()}

    hops: list[checks.Hop] = system["lab"]["hops"]
    ports = [(f"{name}'s metrics", *telemetry_of(settings)) for name, settings in collectors.items()]
    for name, settings in collectors.items():
        for protocol, receiver in settings["receivers"]["otlp"]["protocols"].items():
            ports.append((f"{name}'s OTLP {protocol}", *host_port(receiver["endpoint"], name)))
    ports += [(f"hop {hop['name']}", "127.0.0.1", int(hop["port"])) for hop in hops]
    check_ports_free(ports)

    started = time.monotonic()
    # The samplers first: the first tier routes to them from its first span.
    for name, settings in collectors.items():
        path = work / f"{key}-{name}.json"
        path.write_text(json.dumps(settings, indent=2))
        procs.start(f"{key}-{name}", [str(OTELCOL), OTELCOL_VERSION, f"--config=file:{path}"], process_env({}, name))
        procs.wait_ready(f"{key}-{name}", telemetry[name], READY_TIMEOUT)
    binary = str(service_binary())
    for hop in reversed(hops):
        unit = hop["unit"].removesuffix(".service")
        procs.start(f"{key}-{unit}", [binary], process_env(system["hops"][unit], unit))
        procs.wait_ready(f"{key}-{unit}", f"http://127.0.0.1:{hop['port']}/readyz", READY_TIMEOUT)
    say(f"  three collectors and {len(hops)} hops ready: {time.monotonic() - started:.1f} s")

    trace_ids = []
    for _ in range(requests):
        status, headers, body = http(f"http://127.0.0.1:{hops[0]['port']}/", timeout=30)
        if status != 200 or not trace_id_of(headers):
            raise Failure(f"the entry hop answered {status} without a trace id: {body[:300]}")
        trace_ids.append(trace_id_of(headers))
    expected = checks.expected_span_count(hops)
    sent = requests * expected

    # Decided: the first tier passed every span on, and each sampler decided on
    # every trace (part) it got; then Tempo holds every span they exported.
    # A sampler the routing left out has nothing to decide.
    received: dict[str, float] = {}

    def decided() -> bool:
        procs.all_alive()
        routed = metric(telemetry["first-tier"], "otelcol_exporter_sent_spans")
        done = True
        for s in samplers:
            received[s] = metric(telemetry[s], "otelcol_processor_tail_sampling_new_trace_id_received")
            decisions = metric(telemetry[s], "otelcol_processor_tail_sampling_global_count_traces_sampled")
            done = done and decisions >= received[s]
        return routed >= sent and sum(received.values()) > 0 and done

    wait_until(f"the samplers deciding on all {sent} spans", SETTLE_TIMEOUT, decided)
    say("  trace parts each sampler got: " + ", ".join(f"{s} {n:.0f}" for s, n in received.items()))
    exported = sum(metric(telemetry[s], "otelcol_exporter_sent_spans") for s in samplers)
    counts: dict[str, int] = {}
    services: dict[str, frozenset[str]] = {}

    def in_tempo() -> bool:
        for trace_id in trace_ids:
            spans = tempo_spans(tempo_url, trace_id, timeout=10)
            counts[trace_id] = len(spans)
            services[trace_id] = frozenset(str(span["service"]) for span in spans)
        return sum(counts.values()) >= exported

    wait_until(f"Tempo holding the {exported:.0f} spans the samplers sent", SETTLE_TIMEOUT, in_tempo, interval=2)
    for name in [f"{key}-{hop['unit'].removesuffix('.service')}" for hop in hops] + [f"{key}-{n}" for n in collectors]:
        procs.stop([name])

    whole = sum(1 for n in counts.values() if n == expected)
    cut = sum(1 for n in counts.values() if 0 < n < expected)
    dropped = sum(1 for n in counts.values() if n == 0)
    odd = {t: n for t, n in counts.items() if n > expected}
    if odd:
        raise Failure(f"traces with more spans than the chain's {expected}: {odd}")
    say(
        f"  {requests} traces of {expected} spans ({sent} spans; the samplers sent {exported:.0f} to Tempo):"
        f" {whole} kept whole, {cut} cut, {dropped} dropped whole"
    )
    shapes = Counter(
        (counts[t], ", ".join(sorted(services[t]))) for t in trace_ids if 0 < counts[t] < expected
    )
    for (spans_kept, kept_from), times in sorted(shapes.items()):
        say(f"  {times} cut traces kept {spans_kept} spans, from {kept_from}")
    return whole, cut, dropped


def run(requests: int, work: Path) -> None:
    systems: dict[str, Any] = check_flake_eval(EXPRESSION, "the scaled tail-sampling exercises' settings")
    check_tempo(TEMPO_VERSION)
    tempo_settings = moved_state(systems["traceID"]["tempo"], work / "tempo")
    if tempo_settings != moved_state(systems["service"]["tempo"], work / "tempo"):
        raise Failure("the two exercises configure Tempo differently; this test runs one Tempo for both")
    (work / "tempo.yaml").write_text(json.dumps(tempo_settings, indent=2))  # JSON is YAML
    server = tempo_settings["server"]
    tempo_url = f"http://127.0.0.1:{server['http_listen_port']}"
    check_ports_free(
        [
            ("Tempo's HTTP API", "127.0.0.1", server["http_listen_port"]),
            ("Tempo's gRPC server", "127.0.0.1", server["grpc_listen_port"]),
        ]
    )

    procs = Processes(work)
    try:
        tempo_argv = [str(TEMPO_RUNNER), TEMPO_VERSION, f"--config.file={work / 'tempo.yaml'}"]
        procs.start("tempo", tempo_argv, process_env({}, "tempo"))
        procs.wait_ready("tempo", f"{tempo_url}/ready", READY_TIMEOUT)
        results = {key: run_variant(key, systems[key], requests, tempo_url, work, procs) for key in EXERCISES}
    finally:
        procs.stop(list(procs.running))

    whole, cut, dropped = results["traceID"]
    if whole != requests:
        raise Failure(
            f"routed by trace id, {whole} of {requests} traces kept whole ({cut} cut, {dropped} dropped): expected all"
        )
    whole, cut, dropped = results["service"]
    if cut == 0:
        raise Failure(
            f"routed by service, no trace of {requests} came out cut ({whole} whole, {dropped} dropped):"
            " the variant shows nothing"
        )
    say(f"routed by trace id: {requests} of {requests} kept whole; routed by service: {cut} of {requests} cut")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per routing key (default 20)")
    args = parser.parse_args()
    if not OTELCOL.exists() or not TEMPO_RUNNER.exists():
        say(f"skipped: {OTELCOL} or {TEMPO_RUNNER} is absent")
        return 0
    try:
        with terminated_like_interrupted(), tempfile.TemporaryDirectory(prefix="scaled-tail-sampling-") as scratch:
            run(args.requests, Path(scratch))
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
