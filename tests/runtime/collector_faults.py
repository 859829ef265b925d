#!/usr/bin/env python3
"""The lab's collector under faults, on real binaries, with nothing lost that
the lab's settings promise to keep.

The hops (the service binary), a real OpenTelemetry Collector, real Tempo and
Prometheus run with the commands and settings `nix run .#local` generates for
its baseline exercise (evaluated by ../shared/nix-eval/check-flake); a thread
sends a steady load to the entry hop. Then:

  a. Tempo stops for OUTAGE seconds and starts again: every span of every
     request sent meanwhile reaches Tempo (the exporter's queue and retries);
  b. the collector stops for COLLECTOR_GAP seconds and starts again: what the
     hops could not deliver meanwhile is counted;
  c. the collector hangs (SIGSTOP) for COLLECTOR_GAP seconds, then goes on:
     no request fails or slows by more than SLOWER_AT_MOST;
  d. the collector runs with its queue shrunk to SMALL_QUEUE batches and its
     retries to SMALL_RETRY (an override for this case only: the lab's queue
     carries about 10 minutes) and Tempo stops again: spans are lost, the
     collector's own metrics count at least as many as are missing, and no
     request fails.

Every request of every case must answer 200. It prints, per case, the spans
sent, the spans in Tempo and the exporter's queue; at the end, every query of
the dashboard's pipeline row must have data in Prometheus. Skips itself,
saying so, without ../shared/lab-runtime.

    python3 tests/runtime/collector_faults.py
"""

import argparse
import copy
import dataclasses
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from support import (
    CHECK_FLAKE,
    LOKI_RUNNER,
    LOKI_VERSION,
    ROOT,
    RUNTIME,
    TEMPO_RUNNER,
    Background,
    Failure,
    Processes,
    check_flake_eval,
    check_ports_free,
    check_tempo,
    checks,
    http,
    prometheus_binary,
    say,
    service_binary,
    tempo_spans,
    terminated_like_interrupted,
    trace_id_of,
    wait_until,
)

OTELCOL = RUNTIME / "otelcol"
OTELCOL_VERSION = "0.156.0"
TEMPO_VERSION = "2.10.8"  # the line nixos-26.05 ships; no /var/tempo to map
EXERCISE = "baseline"
STATE_VAR = "TRACING_LAB_STATE"
DASHBOARD = ROOT / "nixos" / "modules" / "tracing-lab" / "dashboards" / "tracing-lab.json"

OUTAGE = 15.0  # seconds Tempo is away in case a, then as long as it takes to be ready
OUTAGE_PAST_QUEUE = 5.0  # the same in case d, which its small queue cannot carry
COLLECTOR_GAP = 6.0  # seconds the collector is away in case b: past the hops' 5 s batch delay
RATE = 4.0  # requests a second: the lab's load (2) and a user clicking
SLOWER_AT_MOST = 1.0  # seconds a request may take longer while the collector hangs (case c)
SMALL_QUEUE = 2  # batches, case d only
SMALL_RETRY = "3s"  # max_elapsed_time, case d only
# The collector's counters of spans it gave up on: retries ran out, queue full.
RSS = "otelcol_process_memory_rss"
LOST_COUNTERS = ["otelcol_exporter_send_failed_spans", "otelcol_exporter_enqueue_failed_spans"]

EXPRESSION = f"""
let
  tempo = pkgs.tempo.overrideAttrs {{
    version = "{TEMPO_VERSION}";
    __intentionallyOverridingVersion = true;
  }};
  p = o.packages.x86_64-linux.lab-local.override {{ pkgs = pkgs // {{ inherit tempo; }}; }};
  local = import {ROOT}/nixos/lib/local.nix;
in {{
  processes = p.processCompose.{EXERCISE}.processes;
  files = p.files.{EXERCISE};
  collector = p.settings.collector.{EXERCISE};
  inherit (p.settings) tempo prometheus loki;
  bin = {{
    tempo = lib.getExe' tempo "tempo";
    loki = lib.getExe' pkgs.grafana-loki "loki";
    prometheus = lib.getExe pkgs.prometheus;
    microservice = lib.getExe o.packages.x86_64-linux.microservice;
    collector = lib.getExe pkgs.${{local.collectorPackage "{EXERCISE}"}};
  }};
  chain = (local.chain "{EXERCISE}").summary;
}}
"""


@dataclasses.dataclass
class Request:
    sent: float  # monotonic
    status: int
    trace_id: str
    took: float  # seconds


class Load(Background):
    """RATE requests a second to the entry hop, each one's answer kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[Request] = []
        super().__init__()

    def run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        next_at = time.monotonic()
        while not self.stopping.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            status, headers, _ = http(self.url, timeout=10)
            self.requests.append(Request(sent, status, trace_id_of(headers), time.monotonic() - sent))
            next_at += 1 / RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def between(self, start: float, end: float) -> list[Request]:
        return [r for r in list(self.requests) if start <= r.sent < end]



@dataclasses.dataclass
class Figures:
    case: str
    requests: int
    sent: int  # spans the hops made for those requests
    in_tempo: int
    queue_max: float  # batches, the most seen in the exporter's queue
    capacity: float
    counted_lost: float  # the collector's send_failed + enqueue_failed over the case
    rss_max: float  # bytes, the collector's largest resident set seen

    def line(self) -> str:
        return (
            f"{self.case}: {self.requests} requests, {self.sent} spans sent, {self.in_tempo} in Tempo "
            f"({self.sent - self.in_tempo} missing), queue up to {self.queue_max:.0f} of {self.capacity:.0f} batches, "
            f"the collector counted {self.counted_lost:.0f} spans lost, its RSS up to {self.rss_max / 2**20:.0f} MiB"
        )


def collector_series(url: str) -> list[tuple[str, str, float]]:
    """The collector's own metrics as it exposes them now: per series its
    name, the series with its labels, and its value; none while it does not
    answer."""
    status, _, body = http(url, timeout=3)
    if status != 200:
        return []
    found = []
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        try:
            found.append((series.split("{", 1)[0], series, float(value)))
        except ValueError:
            continue
    return found


def metrics(url: str) -> dict[str, float]:
    """The collector's own metrics, summed by name (0 for one it has not made yet)."""
    totals: dict[str, float] = {}
    for name, series, value in collector_series(url):
        # The queue figures are the Tempo exporter's: the collector's only
        # exporter without an instance name (the logs' and metrics' exporters
        # are `<type>/loki` and `<type>/prometheus`, nixos/lib/backends.nix).
        if name.startswith("otelcol_exporter_queue_") and re.search(r'exporter="[^"/]*/', series):
            continue
        totals[name] = totals.get(name, 0.0) + value
    return totals


def env_of(process: dict[str, Any]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in process.get("environment", []))


def probe_url(process: dict[str, Any], name: str) -> str:
    probe = process.get("readiness_probe", {}).get("http_get")
    if probe is None:
        raise Failure(f"process {name} has no readiness probe")
    return f"{probe['scheme']}://{probe['host']}:{probe['port']}{probe['path']}"


class Lab:
    """The local lab's processes, started from their evaluated commands."""

    def __init__(self, lab: dict[str, Any], scratch: Path, prometheus_bin: str, service_bin: Path) -> None:
        self.processes: dict[str, Any] = lab["processes"]
        self.scratch = scratch
        self.state = scratch / "state"
        for sub in ("tempo", "prometheus", "loki"):
            (self.state / sub).mkdir(parents=True)
        self.procs = Processes(scratch, grace=10)
        self.files = lab["files"]
        bin_ = lab["bin"]
        self.replacements = {
            bin_["tempo"]: f"{shlex.quote(str(TEMPO_RUNNER))} {TEMPO_VERSION}",
            bin_["prometheus"]: shlex.quote(prometheus_bin),
            bin_["microservice"]: shlex.quote(str(service_bin)),
            bin_["collector"]: f"{shlex.quote(str(OTELCOL))} {OTELCOL_VERSION}",
            bin_["loki"]: f"{shlex.quote(str(LOKI_RUNNER))} {LOKI_VERSION}",
        }
        self.file_replacements = {}
        for name in ("tempo", "prometheus", "loki", "collector"):
            path = scratch / f"{name}.json"  # JSON is YAML
            path.write_text(json.dumps(lab[name]))
            self.file_replacements[self.files[name].removeprefix("file:")] = str(path)
        services = {hop["serviceName"] for hop in lab["chain"]["hops"]}
        self.hops = [n for n, p in self.processes.items() if env_of(p).get("OTEL_SERVICE_NAME") in services]
        if len(self.hops) != len(services):
            raise Failure(f"processes {sorted(self.hops)} run as the chain's services {sorted(services)}")

    def hops_callees_first(self) -> list[str]:
        order: list[str] = []
        while len(order) < len(self.hops):
            ready = [
                hop
                for hop in sorted(self.hops)
                if hop not in order
                and all(d in order or d not in self.hops for d in self.processes[hop].get("depends_on", {}))
            ]
            if not ready:
                raise Failure(f"the hops' depends_on has a cycle: {sorted(self.hops)}")
            order += ready
        return order

    def command(self, name: str, collector_file: Path | None = None) -> str:
        command: str = self.processes[name]["command"]
        for store_path, words in self.replacements.items():
            command = command.replace(f"'{store_path}'", words)
        replacements = dict(self.file_replacements)
        if collector_file is not None:
            replacements[self.files["collector"].removeprefix("file:")] = str(collector_file)
        for store_path, path in replacements.items():
            command = command.replace(store_path, path)
        if "/nix/store/" in command:
            raise Failure(f"a store path is left in {name}'s command: {command}")
        return command

    def launch(self, name: str, collector_file: Path | None = None) -> None:
        env = {**os.environ, STATE_VAR: str(self.state), **env_of(self.processes[name])}
        self.procs.start(name, ["bash", "-c", self.command(name, collector_file)], env)

    def ready(self, name: str) -> float:
        """Seconds until `name` answers its readiness probe."""
        return self.procs.wait_ready(name, probe_url(self.processes[name], name), 90, 0.2)

    def start(self, name: str, collector_file: Path | None = None) -> float:
        self.launch(name, collector_file)
        return self.ready(name)

    def url(self, name: str, path: str) -> str:
        probe = self.processes[name]["readiness_probe"]["http_get"]
        return f"http://{probe['host']}:{probe['port']}{path}"


def spans_in_tempo(tempo: str, trace_id: str) -> int:
    return len(tempo_spans(tempo, trace_id, timeout=5))


def count_in_tempo(tempo: str, requests: list[Request], expected: int, settle: float) -> int:
    """Spans in Tempo for `requests`, once every trace is whole or `settle` s passed."""
    found: dict[str, int] = {}

    def whole() -> bool:
        for r in requests:
            if found.get(r.trace_id, 0) < expected:
                found[r.trace_id] = spans_in_tempo(tempo, r.trace_id)
        return all(found[r.trace_id] >= expected for r in requests)

    try:
        wait_until("every trace whole in Tempo", settle, whole, 2)
    except Failure:
        pass  # what is missing is the figure; the caller judges it
    return sum(min(found.get(r.trace_id, 0), expected) for r in requests)


class QueueWatch(Background):
    """The exporter queue's largest size while the `with` block runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.most = 0.0
        self.capacity = 0.0
        self.rss = 0.0
        super().__init__()

    def run(self) -> None:
        while not self.stopping.is_set():
            now = metrics(self.url)
            self.most = max(self.most, now.get("otelcol_exporter_queue_size", 0.0))
            self.capacity = max(self.capacity, now.get("otelcol_exporter_queue_capacity", 0.0))
            self.rss = max(self.rss, now.get(RSS, 0.0))
            self.stopping.wait(0.5)



def lost_counted(url: str) -> float:
    now = metrics(url)
    return sum(now.get(name, 0.0) for name in LOST_COUNTERS)


def check_answers(case: str, requests: list[Request]) -> None:
    failed = [r for r in requests if r.status != 200 or not r.trace_id]
    if failed:
        raise Failure(f"{case}: {len(failed)} of {len(requests)} requests failed: {failed[:5]}")
    if not requests:
        raise Failure(f"{case}: no requests were sent")


def tempo_outage(lab: Lab, load: Load, expected: int, case: str, outage: float, settle: float) -> Figures:
    """Tempo away for `outage` seconds, back, and then the spans counted,
    waiting up to `settle` seconds for them."""
    collector_metrics = lab.url("otel-collector", "/metrics")
    lost_before = lost_counted(collector_metrics)
    with QueueWatch(collector_metrics) as queue:
        start = time.monotonic()
        lab.procs.stop(["tempo"])
        # Meanwhile the load runs; the collector holds what it cannot send.
        wait_until(f"{outage:.0f} s of Tempo outage", outage + 11, lambda: time.monotonic() - start >= outage, 0.2)
        say(f"  Tempo away for {time.monotonic() - start:.0f} s")
        ready = lab.start("tempo")
        say(f"  Tempo back, ready in {ready:.1f} s")
        end = time.monotonic()
        requests = load.between(start, end)
        in_tempo = count_in_tempo(lab.url("tempo", ""), requests, expected, settle)
    check_answers(case, requests)
    return Figures(
        case,
        len(requests),
        len(requests) * expected,
        in_tempo,
        queue.most,
        queue.capacity,
        lost_counted(collector_metrics) - lost_before,
        queue.rss,
    )


def figures_now(lab: Lab, case: str, requests: list[Request], expected: int, in_tempo: int) -> Figures:
    """A case's figures, with the queue and the counters as the collector has them now."""
    now = metrics(lab.url("otel-collector", "/metrics"))
    return Figures(
        case,
        len(requests),
        len(requests) * expected,
        in_tempo,
        now.get("otelcol_exporter_queue_size", 0.0),
        now.get("otelcol_exporter_queue_capacity", 0.0),
        sum(now.get(name, 0.0) for name in LOST_COUNTERS),
        now.get(RSS, 0.0),
    )


def collector_restart(lab: Lab, load: Load, expected: int, case: str) -> Figures:
    """The collector away for COLLECTOR_GAP seconds: what the hops sent
    meanwhile is counted, and what they send after it is whole."""
    start = time.monotonic()
    lab.procs.stop(["otel-collector"])
    wait_until(
        f"{COLLECTOR_GAP:.0f} s without a collector",
        COLLECTOR_GAP + 11,
        lambda: time.monotonic() - start >= COLLECTOR_GAP,
        0.2,
    )
    ready = lab.start("otel-collector")
    end = time.monotonic()
    say(f"  collector away for {end - start - ready:.0f} s, then ready in {ready:.1f} s")
    wait_until("3 s of load after the restart", 5, lambda: time.monotonic() - end >= 3, 0.2)
    after = load.between(end, end + 3)
    tempo = lab.url("tempo", "")
    if count_in_tempo(tempo, after, expected, 20) != len(after) * expected:
        raise Failure(f"{case}: requests sent after the collector was back are not whole in Tempo")
    requests = load.between(start, end)
    in_tempo = count_in_tempo(tempo, requests, expected, 2)
    check_answers(case, requests + after)
    return figures_now(lab, case, requests, expected, in_tempo)


def collector_hangs(lab: Lab, load: Load, expected: int, case: str) -> Figures:
    """The collector stopped in its tracks (SIGSTOP) for COLLECTOR_GAP seconds:
    its sockets still accept, nothing answers. Requests must not notice."""
    group = lab.procs.running["otel-collector"].pid  # its own process group
    before = load.between(time.monotonic() - 10, time.monotonic())
    start = time.monotonic()
    os.killpg(group, signal.SIGSTOP)
    try:
        wait_until(
            f"{COLLECTOR_GAP:.0f} s of a hung collector",
            COLLECTOR_GAP + 1,
            lambda: time.monotonic() - start >= COLLECTOR_GAP,
            0.2,
        )
    finally:
        os.killpg(group, signal.SIGCONT)
    end = time.monotonic()
    requests = load.between(start, end)
    check_answers(case, requests)
    slowest_before = max((r.took for r in before), default=0.0)
    slowest = max(r.took for r in requests)
    say(f"  slowest request: {slowest * 1000:.0f} ms while it hung, {slowest_before * 1000:.0f} ms before")
    if slowest > slowest_before + SLOWER_AT_MOST:
        raise Failure(f"{case}: a request took {slowest:.2f} s while the collector hung, {slowest_before:.2f} s before")
    # The hops' exports to the hung collector time out; what they held is counted.
    in_tempo = count_in_tempo(lab.url("tempo", ""), requests, expected, 20)
    return figures_now(lab, case, requests, expected, in_tempo)


def pipeline_exporter(settings: dict[str, Any], signal: str) -> str:
    """The name of the one exporter of the collector's `signal` pipeline."""
    exporters = settings["service"]["pipelines"][signal]["exporters"]
    if len(exporters) != 1:
        raise Failure(f"the {signal} pipeline has exporters {exporters}, expected one")
    name: str = exporters[0]
    return name


def shrunk(settings: dict[str, Any], signal: str = "traces") -> dict[str, Any]:
    """The lab's collector settings with the `signal` exporter's queue and
    retries cut down so that an outage overflows them (an override for one
    case only; an exporter without settings of its own gets them)."""
    small = copy.deepcopy(settings)
    exporter = small["exporters"][pipeline_exporter(small, signal)]
    exporter.setdefault("sending_queue", {}).update(queue_size=SMALL_QUEUE, num_consumers=1)
    exporter.setdefault("retry_on_failure", {}).update(
        initial_interval="1s", max_interval="1s", max_elapsed_time=SMALL_RETRY
    )
    return small


def pipeline_queries() -> list[str]:
    """The expressions of the dashboard's panels on the collector's own metrics."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "otelcol_" in t.get("expr", "")]
    if not exprs:
        raise Failure(f"{DASHBOARD.name} has no panel on the collector's metrics (otelcol_*)")
    return exprs


def check_pipeline_row(prometheus: str) -> None:
    """Every pipeline-row query, and each lost-span counter by its own name, has data."""
    queries = pipeline_queries() + [f"sum({name})" for name in LOST_COUNTERS]
    empty: list[str] = []

    def all_have_data() -> bool:
        empty.clear()
        for expr in queries:
            status, _, body = http(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5)
            if status != 200 or not json.loads(body)["data"]["result"]:
                empty.append(expr)
        return not empty

    try:
        wait_until("the pipeline row's queries answering with data", 30, all_have_data, 2)
    except Failure as failure:
        raise Failure(f"{failure}: no data for {empty}") from None
    say(f"  the dashboard's {len(queries) - len(LOST_COUNTERS)} pipeline queries and both lost-span counters have data")


def run(scratch: Path) -> list[Figures]:
    check_tempo(TEMPO_VERSION)
    prometheus_bin = prometheus_binary(install=True)
    if prometheus_bin is None:
        raise Failure("no prometheus binary")
    service_bin = service_binary()
    evaluated: dict[str, Any] = check_flake_eval(EXPRESSION, f"lab-local's {EXERCISE} settings")
    lab = Lab(evaluated, scratch, prometheus_bin, service_bin)
    hops: list[checks.Hop] = evaluated["chain"]["hops"]
    expected = checks.expected_span_count(hops)
    check_ports_free([(f"{h['serviceName']}", "127.0.0.1", h["port"]) for h in hops])

    figures: list[Figures] = []
    try:
        for name in ["prometheus", "tempo", "otel-collector", *lab.hops_callees_first()]:
            say(f"  {name}: ready in {lab.start(name):.1f} s")
        # The hop the lab's load sends to.
        entry = lab.url(next(iter(lab.processes["load"]["depends_on"])), "/")
        with Load(entry) as load:
            # Past each hop's first request (its template compiles once, one span more).
            wait_until("the first answers", 30, lambda: len(load.requests) >= 3, 0.2)
            say(f"a. Tempo away for {OUTAGE:.0f} s, the lab's queue and retries")
            figures.append(tempo_outage(lab, load, expected, "a. Tempo outage", OUTAGE, 60))
            say(figures[-1].line())
            if figures[-1].in_tempo != figures[-1].sent:
                raise Failure(f"spans lost in a Tempo outage the queue carries: {figures[-1].line()}")

            say(f"b. the collector away for {COLLECTOR_GAP:.0f} s")
            figures.append(collector_restart(lab, load, expected, "b. collector restart"))
            say(figures[-1].line())

            say(f"c. the collector hangs for {COLLECTOR_GAP:.0f} s")
            figures.append(collector_hangs(lab, load, expected, "c. collector hangs"))
            say(figures[-1].line())

            say(f"d. queue of {SMALL_QUEUE} batches, retries {SMALL_RETRY}, Tempo away {OUTAGE_PAST_QUEUE:.0f} s")
            small = scratch / "collector-small-queue.json"
            small.write_text(json.dumps(shrunk(evaluated["collector"])))
            lab.procs.stop(["otel-collector"])
            lab.start("otel-collector", small)
            settle = time.monotonic()
            wait_until("the hops exporting to the new collector", 10, lambda: time.monotonic() - settle >= 6, 0.2)
            # What arrives later than `settle` counts as missing: the check below stays fair.
            figures.append(tempo_outage(lab, load, expected, "d. Tempo outage past the queue", OUTAGE_PAST_QUEUE, 10))
            say(figures[-1].line())
            missing = figures[-1].sent - figures[-1].in_tempo
            if missing <= 0 or figures[-1].counted_lost < missing:
                raise Failure(
                    f"an outage past the queue: expected spans missing and the collector to count at least as "
                    f"many lost: {figures[-1].line()}"
                )
        check_pipeline_row(lab.url("prometheus", ""))
    except Failure as failure:
        said = lab.procs.log_tail("otel-collector", 8, r"error|warn")
        evidence = f"\n  the collector's log (errors, warnings):\n{said}" if said else ""
        raise Failure(f"{failure}{evidence}") from None
    finally:
        lab.procs.grace = 3  # nothing to keep now
        for name in [*lab.hops, "otel-collector", "tempo", "prometheus"]:
            lab.procs.stop([name])
    return figures


class Reported(Protocol):
    def line(self) -> str: ...


def report(
    doc: str | None,
    run_cases: Callable[[Path], Sequence[Reported]],
    needs: list[Path],
    absent: str,
    prefix: str,
    heading: str,
) -> int:
    """A fault test's main, `doc` its --help: skips, saying so, when a file
    of `needs` is absent; runs its cases in a scratch directory; prints their
    figures under `heading`. The exit status."""
    argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not all(path.exists() for path in needs):
        say(f"skipped: {absent} is absent")
        return 0
    started = time.monotonic()
    try:
        with terminated_like_interrupted(), tempfile.TemporaryDirectory(prefix=prefix) as scratch:
            figures = run_cases(Path(scratch))
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    say(heading)
    for f in figures:
        say(f"  {f.line()}")
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


def main() -> int:
    return report(
        __doc__,
        run,
        [OTELCOL, TEMPO_RUNNER, CHECK_FLAKE],
        f"{RUNTIME} (real collector and Tempo) or {CHECK_FLAKE}",
        "collector-faults-",
        "figures (spans sent, in Tempo, queue):",
    )


if __name__ == "__main__":
    sys.exit(main())
