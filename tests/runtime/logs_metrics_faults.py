#!/usr/bin/env python3
"""Loki down or slow, or Prometheus' remote write out of reach: no request
fails, the collector counts the log records and metric points it gives up on,
and the dashboard's pipeline row shows them.

The hops (the service binary), a real OpenTelemetry Collector, real Tempo,
Loki and Prometheus run with the commands and settings `nix run .#local`
generates for its baseline exercise (collector_faults.py starts them; the
settings are evaluated by ../shared/nix-eval/check-flake), under a steady
load. The checks on the collector go through the queries of the dashboard's
pipeline panels, found by their titles and sent to Prometheus, so that the
panels are what is tested (but in case c, whose losses the panels already show
from b). First the panels must see log records and metric points sent. Then:

  a. Loki stops (and stays away), with the lab's settings: the Loki
     exporter's queue grows on the "Sending queue" panel, nothing is lost
     yet;
  b. the collector restarts with the Loki exporter's queue shrunk to
     SMALL_QUEUE batches and its retries to SMALL_RETRY (an override for
     this case only), Loki still down: "Log records lost on the way to Loki"
     shows the Loki exporter's losses;
  c. Loki slow: a listener on Loki's port accepts and never answers; the
     collector's own counters grow by more losses;
  d. the collector restarts with the metrics exporter sending to a port where
     nothing listens, its retries cut to SMALL_RETRY: "Metric points lost on
     the way to Prometheus" shows the metrics exporter's losses.

In every case every request answers 200 and every trace reaches Tempo whole.
It prints, per case a-c, the requests, the log records the collector accepted,
sent, failed and dropped (its own counters over the case), and the Loki
exporter's queue; for d the requests and the metric points the panel shows lost. Skips itself, saying
so, without ../shared/lab-runtime.

    python3 tests/runtime/logs_metrics_faults.py
"""

import copy
import dataclasses
import json
import socket
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import collector_faults as faults
from support import (
    CHECK_FLAKE,
    LOKI_RUNNER,
    RUNTIME,
    Background,
    Failure,
    check_flake_eval,
    check_ports_free,
    check_tempo,
    checks,
    http,
    prometheus_binary,
    say,
    service_binary,
    wait_until,
)

OUTAGE = 12.0  # seconds of case a: past two scrapes of the collector (every 5 s)
DROPPING = 8.0  # seconds of cases b and c at least, once the collector counts losses
PANEL_TIMEOUT = 40.0  # seconds for a panel to show a change: scrape interval and rate window
SETTLE = 6.0  # seconds after a collector restart: past the hops' 5 s batch delay

# The pipeline row's panels this test reads (nixos/modules/tracing-lab/dashboards).
LOGS_THROUGH = "Log records through the collector"
METRICS_THROUGH = "Metric points through the collector"
LOGS_LOST = "Log records lost on the way to Loki"
METRICS_LOST = "Metric points lost on the way to Prometheus"
QUEUE = "Sending queue"

# The collector's own counters in the figures, by the Loki exporter unless receiver_.
ACCEPTED = "otelcol_receiver_accepted_log_records"
SENT = "otelcol_exporter_sent_log_records"
FAILED = "otelcol_exporter_send_failed_log_records"
DROPPED = "otelcol_exporter_enqueue_failed_log_records"
QUEUE_SIZE = "otelcol_exporter_queue_size"


@dataclasses.dataclass
class Series:
    legend: str  # as Grafana shows it, {{label}} filled in
    labels: dict[str, str]
    value: float


def panel_series(prometheus: str, title: str) -> list[Series]:
    """Every query of the dashboard panel titled `title`, as Prometheus answers it now."""
    dashboard = json.loads(faults.DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("title") == title]
    if len(panels) != 1:
        titles = [p.get("title") for p in dashboard["panels"]]
        raise Failure(f"{faults.DASHBOARD.name} has {len(panels)} panels titled {title!r}: {titles}")
    found = []
    for target in panels[0].get("targets", []):
        expr = target["expr"]
        status, _, body = http(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5)
        if status != 200:
            raise Failure(f"panel {title!r}: Prometheus refused {expr} ({status}): {body[:300]}")
        for result in json.loads(body)["data"]["result"]:
            labels: dict[str, str] = result["metric"]
            legend = target.get("legendFormat", "")
            for key, value in labels.items():
                legend = legend.replace("{{" + key + "}}", value)
            found.append(Series(legend, labels, float(result["value"][1])))
    return found


def panel_value(prometheus: str, title: str, exporter: str, legend_part: str) -> float:
    """The sum of the panel's series of `exporter` whose legend contains `legend_part`."""
    series = panel_series(prometheus, title)
    return sum(s.value for s in series if s.labels.get("exporter") == exporter and legend_part in s.legend)


def wait_for_panel(prometheus: str, title: str, exporter: str, legend_part: str, what: str) -> float:
    """Waits until the panel shows more than 0 for `exporter`; the value."""
    seen: list[Series] = []

    def value() -> float:
        seen[:] = panel_series(prometheus, title)
        return sum(s.value for s in seen if s.labels.get("exporter") == exporter and legend_part in s.legend)

    try:
        wait_until(f"panel {title!r} showing {what} for {exporter}", PANEL_TIMEOUT, lambda: value() > 0, 2)
    except Failure as failure:
        shown = ", ".join(f"{s.legend}={s.value:g}" for s in seen) or "no series"
        raise Failure(f"{failure}; it shows {shown}") from None
    return value()


def counters(url: str, exporter: str) -> dict[str, float]:
    """The collector's own counters of the log records, straight from it:
    the receiver's and the `exporter`'s (0 for one it has not made yet)."""
    totals: dict[str, float] = {}
    for name, series, value in faults.collector_series(url):
        if name == ACCEPTED or (name in (SENT, FAILED, DROPPED, QUEUE_SIZE) and f'exporter="{exporter}"' in series):
            totals[name] = totals.get(name, 0.0) + value
    return totals


class Watch(Background):
    """The Loki exporter's largest queue while the `with` block runs."""

    def __init__(self, url: str, exporter: str) -> None:
        self.args = (url, exporter)
        self.most = 0.0
        super().__init__()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.most = max(self.most, counters(*self.args).get(QUEUE_SIZE, 0.0))
            self.stopping.wait(0.5)


class Unanswering(Background):
    """A slow Loki: accepts connections on `port` and never answers."""

    def __init__(self, port: int) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.held: list[socket.socket] = []
        super().__init__()

    def run(self) -> None:
        with self.server:
            while not self.stopping.is_set():
                try:
                    self.held.append(self.server.accept()[0])
                except TimeoutError:
                    continue
        for conn in self.held:
            conn.close()


@dataclasses.dataclass
class Figures:
    case: str
    requests: int
    failed_requests: int
    spans_sent: int
    spans_in_tempo: int
    accepted: float  # log records, over the case
    sent: float
    failed: float
    dropped: float
    queue_max: float  # the Loki exporter's batches
    capacity: float

    def line(self) -> str:
        return (
            f"{self.case}: {self.requests} requests, {self.failed_requests} failed; "
            f"spans {self.spans_in_tempo} of {self.spans_sent} in Tempo; log records accepted {self.accepted:.0f}, "
            f"sent {self.sent:.0f}, failed {self.failed:.0f}, dropped {self.dropped:.0f}; "
            f"Loki queue up to {self.queue_max:.0f} of {self.capacity:.0f} batches"
        )


class Case:
    """One case: the requests and counters from its start to `end()`."""

    def __init__(self, lab: faults.Lab, load: faults.Load, exporter: str, name: str) -> None:
        self.lab, self.load, self.exporter, self.name = lab, load, exporter, name
        self.url = lab.url("otel-collector", "/metrics")
        self.before = counters(self.url, exporter)
        self.start = time.monotonic()
        self.watch = Watch(self.url, exporter).__enter__()

    def losing(self) -> bool:
        """Whether the collector counted log records failed or dropped since the start."""
        now = counters(self.url, self.exporter)
        return sum(now.get(k, 0.0) - self.before.get(k, 0.0) for k in (FAILED, DROPPED)) > 0

    def end(self, expected: int, prometheus: str) -> Figures:
        end = time.monotonic()
        self.watch.__exit__()
        after = counters(self.url, self.exporter)
        requests = self.load.between(self.start, end)
        failed = sum(1 for r in requests if r.status != 200 or not r.trace_id)
        faults.check_answers(self.name, requests)
        in_tempo = faults.count_in_tempo(self.lab.url("tempo", ""), requests, expected, 30)
        capacity = panel_value(prometheus, QUEUE, self.exporter, "capacity")
        delta = {k: after.get(k, 0.0) - self.before.get(k, 0.0) for k in (ACCEPTED, SENT, FAILED, DROPPED)}
        figures = Figures(
            self.name,
            len(requests),
            failed,
            len(requests) * expected,
            in_tempo,
            delta[ACCEPTED],
            delta[SENT],
            delta[FAILED],
            delta[DROPPED],
            self.watch.most,
            capacity,
        )
        say(f"  {figures.line()}")
        if in_tempo != figures.spans_sent:
            raise Failure(f"{self.name}: traces not whole in Tempo: {figures.line()}")
        return figures


def unreachable_metrics(settings: dict[str, Any]) -> dict[str, Any]:
    """The lab's collector settings with the metrics exporter writing to a port
    of 127.0.0.1 where nothing listens, its retries cut to SMALL_RETRY (an
    override for case d only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    changed = copy.deepcopy(settings)
    exporter = changed["exporters"][faults.pipeline_exporter(changed, "metrics")]
    exporter["endpoint"] = f"http://127.0.0.1:{port}/api/v1/write"
    exporter.setdefault("retry_on_failure", {}).update(
        initial_interval="1s", max_interval="1s", max_elapsed_time=faults.SMALL_RETRY
    )
    return changed


def wait_seconds(what: str, since: float, seconds: float) -> None:
    wait_until(what, seconds + 5, lambda: time.monotonic() - since >= seconds, 0.2)


def run(scratch: Path) -> list[Figures]:
    check_tempo(faults.TEMPO_VERSION)
    prometheus_bin = prometheus_binary(install=True)
    if prometheus_bin is None:
        raise Failure("no prometheus binary")
    service_bin = service_binary()
    evaluated: dict[str, Any] = check_flake_eval(faults.EXPRESSION, f"lab-local's {faults.EXERCISE} settings")
    lab = faults.Lab(evaluated, scratch, prometheus_bin, service_bin)
    hops: list[checks.Hop] = evaluated["chain"]["hops"]
    expected = checks.expected_span_count(hops)
    loki_exporter = faults.pipeline_exporter(evaluated["collector"], "logs")
    metrics_exporter = faults.pipeline_exporter(evaluated["collector"], "metrics")
    loki_port: int = lab.processes["loki"]["readiness_probe"]["http_get"]["port"]
    check_ports_free([(h["serviceName"], "127.0.0.1", h["port"]) for h in hops])
    prometheus = lab.url("prometheus", "")

    figures: list[Figures] = []
    try:
        backends = ["prometheus", "tempo", "loki"]
        for name in backends:
            lab.launch(name)  # all at once: Tempo and Loki take some 15 s each
        for name in [*backends, "otel-collector", *lab.hops_callees_first()]:
            if name in backends:
                say(f"  {name}: ready in {lab.ready(name):.1f} s")
            else:
                say(f"  {name}: ready in {lab.start(name):.1f} s")
        entry = lab.url(next(iter(lab.processes["load"]["depends_on"])), "/")
        with faults.Load(entry) as load:
            wait_until("the first answers", 30, lambda: len(load.requests) >= 3, 0.2)
            sent = wait_for_panel(prometheus, LOGS_THROUGH, loki_exporter, "sent", "log records sent")
            points = wait_for_panel(prometheus, METRICS_THROUGH, metrics_exporter, "sent", "metric points sent")
            say(f"  Loki up: the panels show {sent:.1f} log records/s and {points:.2f} metric points/s sent")

            say(f"a. Loki stopped for {OUTAGE:.0f} s, the lab's settings")
            case = Case(lab, load, loki_exporter, "a. Loki down, the lab's queue")
            lab.procs.stop(["loki"])
            queued = wait_for_panel(prometheus, QUEUE, loki_exporter, "queued", "batches queued")
            wait_seconds(f"{OUTAGE:.0f} s of Loki outage", case.start, OUTAGE)
            lost = panel_value(prometheus, LOGS_LOST, loki_exporter, "")
            figures.append(case.end(expected, prometheus))
            say(f"  the panels: {queued:.0f} batches queued for {loki_exporter}, {lost:g} log records/s lost")
            if lost != 0:
                raise Failure(f"{LOGS_LOST!r} shows {lost:g} for {loki_exporter}: the lab's queue should carry it")

            say(f"b. Loki still down, its queue cut to {faults.SMALL_QUEUE} batches, retries {faults.SMALL_RETRY}")
            small = scratch / "collector-small-loki-queue.json"
            small.write_text(json.dumps(faults.shrunk(evaluated["collector"], "logs")))
            lab.procs.stop(["otel-collector"])
            lab.start("otel-collector", small)
            wait_seconds("the hops exporting to the new collector", time.monotonic(), SETTLE)
            case = Case(lab, load, loki_exporter, "b. Loki down, a small queue")
            lost = wait_for_panel(prometheus, LOGS_LOST, loki_exporter, "", "log records lost")
            wait_seconds(f"{DROPPING:.0f} s of losses", case.start, DROPPING)
            figures.append(case.end(expected, prometheus))
            say(f"  the panel {LOGS_LOST!r}: {lost:.1f} log records/s lost by {loki_exporter}")

            say(f"c. Loki slow: its port {loki_port} accepts and never answers")
            case = Case(lab, load, loki_exporter, "c. Loki slow, a small queue")
            with Unanswering(loki_port) as slow:
                wait_seconds(f"{DROPPING:.0f} s of a slow Loki", case.start, DROPPING)
                # Losses are counted once the queue is full: the exporter's one
                # consumer waits on a request that never ends.
                wait_until("the collector counting log records lost to a slow Loki", PANEL_TIMEOUT, case.losing, 1)
                figures.append(case.end(expected, prometheus))
                say(f"  {len(slow.held)} connections to the slow Loki held open")

            say("d. Prometheus' remote write out of reach: the metrics exporter writes to a closed port")
            unreachable = scratch / "collector-metrics-unreachable.json"
            unreachable.write_text(json.dumps(unreachable_metrics(evaluated["collector"])))
            lab.procs.stop(["otel-collector"])
            lab.start("otel-collector", unreachable)
            started = time.monotonic()
            lost = wait_for_panel(prometheus, METRICS_LOST, metrics_exporter, "", "metric points lost")
            requests = load.between(started, time.monotonic())
            faults.check_answers("d. remote write out of reach", requests)
            say(
                f"  d. {len(requests)} requests, 0 failed; the panel {METRICS_LOST!r}:"
                f" {lost:.2f} metric points/s lost by {metrics_exporter}"
            )
    except Failure as failure:
        said = lab.procs.log_tail("otel-collector", 8, r"error|warn")
        evidence = f"\n  the collector's log (errors, warnings):\n{said}" if said else ""
        raise Failure(f"{failure}{evidence}") from None
    finally:
        lab.procs.grace = 3  # nothing to keep now
        for name in [*lab.hops, "otel-collector", "loki", "tempo", "prometheus"]:
            lab.procs.stop([name])
    for f in figures[1:]:
        if f.failed + f.dropped <= 0:
            raise Failure(f"{f.case}: the collector counted no log records lost: {f.line()}")
    return figures


def main() -> int:
    return faults.report(
        __doc__,
        run,
        [faults.OTELCOL, LOKI_RUNNER, CHECK_FLAKE],
        f"{RUNTIME} (real collector, Tempo and Loki) or {CHECK_FLAKE}",
        "logs-metrics-faults-",
        "figures (requests; log records over each case, by the Loki exporter):",
    )


if __name__ == "__main__":
    sys.exit(main())
