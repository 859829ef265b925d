#!/usr/bin/env python3
"""Runtime test of the lab's generated configuration, without Nix builds or a VM.

What it proves: the lab's whole pipeline, as the NixOS modules generate it,
works with the real programs. It evaluates lab systems (../shared/nix-eval/
check-flake) and starts, with exactly what evaluation produced, a real Tempo
(2.10.8 or 3.0.3 from ../shared/lab-runtime: Tempo's settings and the flags of
its unit), a real Prometheus (Debian's, with the unit's flags and its scrape
configs), a real OpenTelemetry Collector (0.156.0 from ../shared/lab-runtime,
with `services.opentelemetry-collector.settings` and its unit's flags) and
the chain of the project's own `microservice` binary (each hop with its unit's
environment and the chain of /etc/tracing-lab/lab.json). The hops send to the
collector exactly as in the VM: their OTEL_EXPORTER_OTLP_ENDPOINT is checked
to name the collector's receiver, not changed; the collector sends on to
Tempo. Then it asserts, with the checks the VM test shares
(nixos/tests/lab_checks.py): every span of a request with the right parents
in /api/traces/<id>; search by service.name finds it; every caller→callee edge
in the service graph and span metrics per service in Prometheus; and every
query of the provisioned dashboard and of the Tempo data source's
trace-to-metrics links returns data, with Grafana's variables substituted the
way Grafana does, sent to the URLs of the provisioned data sources (a query
with series per service or edge must have every one of the chain's; one
without, such as the collector's own metrics, must have data). The exercises
that break the lab on purpose are checked by their signature instead (a
failing edge; a trace cut at the hop that drops the context). The
tail-sampling exercise is measured on the real `tail_sampling` processor over
a few hundred requests, and compared with the terminal runner's imitation on
the same traffic (tail_sampling_check.py).

Tempo and Prometheus start once per Tempo version and serve every chain whose
systems configure them identically (a chain that configures them differently
gets backends of its own); so does the collector for the chains that follow
one another with the same collector settings and unit (the tail-sampling
chain has one of its own); only the hops restart between chains. So that data
of an earlier chain cannot pass for a later one's, the default chain runs first
on fresh backends, the metric checks wait for counters to grow past what they
were when the chain started, and the search for the broken chain's orphans
looks only at traces started since. A dashboard query must have data for each
of the chain's own services and edges; one that sums over all of them may see
an earlier chain's, but it has had fresh backends with the default chain.

Only these differ from the lab: state directories live in a temporary
directory (Tempo 3's /var/tempo, which the unit maps with BindPaths, is a bind
mount in a private mount namespace; the collector's StateDirectory and
WorkingDirectory); processes run as root from this machine's PATH, not as
systemd units; the collector is the runtime's 0.156.0 build, where nixpkgs
ships its own. In the tail-sampling chain only, the collector's OTLP/HTTP
receiver moves to a free port and a recording relay (otlp_relay.py) takes its
place: it passes every export request on unchanged and keeps a copy, so that
the spans of the traces the collector drops are known too.

What only the VM test proves: the systemd units themselves (ordering, restarts,
DynamicUser, hardening), Grafana (provisioning, data sources, the dashboard as
it loads), the page's nesting, the fault cases, and the Nix build of
everything.

usage: tests/runtime/nixos_lab.py [--tempo VERSION]... [--chain NAME]...
(default: every Tempo in ../shared/lab-runtime × every chain)
"""

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tail_sampling_check
from otlp_relay import OtlpRelay, free_port
from support import (
    ROOT,
    RUNTIME,
    TEMPO_RUNNER,
    Background,
    Failure,
    Processes,
    available_tempos,
    check_flake_eval,
    check_ports_free,
    check_tempo,
    checks,
    get_json,
    http,
    prometheus_binary,
    say,
    service_binary,
    tail_sampling_binary,
    tempo_spans,
    terminated_like_interrupted,
    trace_id_of,
    wait_until,
)

# How long each wait may take before the run fails (seconds).
READY_TIMEOUT = 120
TRACE_TIMEOUT = 60
SEARCH_TIMEOUT = 90
METRICS_TIMEOUT = 120
QUERY_TIMEOUT = 90

# The chains each Tempo runs with: the module's default, the documented four-hop
# example with fan-out (its Nix block is evaluated as written there), and the
# exercises that break the lab on purpose in a way Tempo and Prometheus show.
README_CHAIN_MARK = "A four-hop chain with fan-out"
EXERCISES = ["errors", "broken-propagation", "tail-sampling"]
CHAINS = ["default", "fan-out", *EXERCISES]
# Exercises with collector settings of their own that another runtime test
# runs on real collectors instead: two collector tiers need processes this
# test does not start.
COVERED_ELSEWHERE = {
    "tail-sampling-scaled": "tests/runtime/scaled_tail_sampling.py",
    "tail-sampling-scaled-by-service": "tests/runtime/scaled_tail_sampling.py",
}


# --- evaluation ----------------------------------------------------------------


def readme_chain_module() -> str:
    """The Nix block of the documented fan-out example (README.md or a page of
    docs/), as a module expression."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text() if page.exists() else ""
        at = text.find(README_CHAIN_MARK)
        match = re.compile(r"```nix\n(.*?)```", re.S).search(text, at) if at >= 0 else None
        if match:
            # It names the flake input `tracing-lab`; here that is the flake's outputs.
            return f"(let tracing-lab = o; in {match.group(1)})"
    raise Failure(f"no ```nix block after {README_CHAIN_MARK!r} in README.md or docs/*.md")


def eval_expression(tempo_versions: list[str], chains: list[str]) -> str:
    """One Nix expression describing every lab system to run, by "<tempo>/<chain>"."""
    chain_modules = {
        "default": "{ imports = [ o.nixosModules.default ]; services.tracing-lab.enable = true; }",
        "fan-out": readme_chain_module(),
        **{
            name: f'{{ imports = [ o.nixosModules.default ]; services.tracing-lab = {{ enable = true; exercise = "{name}"; }}; }}'
            for name in EXERCISES
        },
    }
    systems = " ".join(
        f'"{v}/{c}" = describe (labSystem "{v}" {chain_modules[c]});' for v in tempo_versions for c in chains
    )
    return f"""
let
  # As for nixos-26.05 (Tempo 2.10) through an overlay, as for newer nixpkgs
  # (Tempo 3) with nixpkgs' own: whichever has the runtime's major.minor.
  tempoOverlay = version: f: p: {{
    tempo = p.tempo.overrideAttrs {{ inherit version; __intentionallyOverridingVersion = true; }};
  }};
  labSystem = version: chain: lib.nixosSystem {{
    modules = [ chain {{
      boot.isContainer = true;
      system.stateVersion = "26.05";
      nixpkgs.hostPlatform = "x86_64-linux";
      nixpkgs.overlays = lib.optional
        (lib.versions.majorMinor pkgs.tempo.version != lib.versions.majorMinor version)
        (tempoOverlay version);
    }} ];
  }};
  unit = cfg: name: {{
    inherit (cfg.systemd.services.${{name}}) environment serviceConfig;
  }};
  describe = system: let
    cfg = system.config;
    prometheus = cfg.services.prometheus;
    labJson = cfg.environment.etc."tracing-lab/lab.json".text;
    # The hops' units as lab.json names them.
    hopUnits = map (hop: lib.removeSuffix ".service" hop.unit) (builtins.fromJSON labJson).hops;
    providers = cfg.services.grafana.provision.dashboards.settings.providers;
    dashboardsOf = provider: lib.mapAttrs
      (file: _: builtins.readFile (provider.options.path + "/${{file}}"))
      (lib.filterAttrs (file: type: type == "regular" && lib.hasSuffix ".json" file)
        (builtins.readDir provider.options.path));
  in {{
    tempoVersion = system.pkgs.tempo.version;
    tempo = unit cfg "tempo" // {{ inherit (cfg.services.tempo) settings; }};
    collector = unit cfg "opentelemetry-collector" // {{
      inherit (cfg.services.opentelemetry-collector) settings;
    }};
    prometheus = unit cfg "prometheus" // {{
      config = {{
        global = prometheus.globalConfig;
        scrape_configs = prometheus.scrapeConfigs;
        remote_write = prometheus.remoteWrite;
        remote_read = prometheus.remoteRead;
        alerting.alertmanagers = prometheus.alertmanagers;
      }};
      inherit (prometheus) configText enableReload rules ruleFiles;
    }};
    hops = lib.genAttrs hopUnits (unit cfg);
    inherit labJson;
    datasources = cfg.services.grafana.provision.datasources.settings;
    dashboards = lib.foldl' (all: p: all // dashboardsOf p) {{ }} providers;
  }};
  # The exercises that give the collector settings of their own (its
  # `collector` block, nixos/lib/exercises.nix): each must be one of the
  # chains this test knows. Plain data, so cheaper than evaluating every
  # specialisation of the lab VM.
  collectorChanging = lib.attrNames (lib.filterAttrs (_: e: e.collector != {{ }})
    (import {ROOT}/nixos/lib/exercises.nix).byName);
in {{ systems = {{ {systems} }}; inherit collectorChanging; }}
"""


def evaluate(tempo_versions: list[str], chains: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = check_flake_eval(
        eval_expression(tempo_versions, chains), f"{len(tempo_versions) * len(chains)} lab systems"
    )
    unknown = sorted(set(result["collectorChanging"]) - set(CHAINS) - set(COVERED_ELSEWHERE))
    if unknown:
        raise Failure(
            f"the exercises {unknown} change the collector's settings, but this test has no chain for them"
            " (add them to EXERCISES, with a signature, or to COVERED_ELSEWHERE with the test that runs them)"
        )
    systems: dict[str, Any] = result["systems"]
    return systems


# --- what systemd would have done ------------------------------------------------


def systemd_unescape(value: str, where: str) -> str:
    """systemd expands %-specifiers in ExecStart= and Environment=; the lab only uses %%."""
    other = re.findall(r"%[^%]", value.replace("%%", ""))
    if other:
        raise Failure(f"{where} uses systemd specifiers {other}, which this test does not expand")
    return value.replace("%%", "%")


def exec_start(service_config: dict[str, Any], where: str) -> list[str]:
    command = service_config.get("ExecStart")
    if isinstance(command, list):
        command = " ".join(command)
    if not command:
        raise Failure(f"{where} has no ExecStart")
    # A backslash-newline continues the line, as in a unit file.
    return [systemd_unescape(word, f"{where}'s ExecStart") for word in shlex.split(command.replace("\\\n", " "))]


def unit_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [word for item in value for word in str(item).split()]


class StateDirs:
    """Maps the units' state directories (and the like) into a temporary directory."""

    KINDS = {
        "StateDirectory": "/var/lib",
        "RuntimeDirectory": "/run",
        "CacheDirectory": "/var/cache",
        "LogsDirectory": "/var/log",
    }

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mapping: dict[str, Path] = {}

    def add_unit(self, service_config: dict[str, Any]) -> None:
        for key, parent in self.KINDS.items():
            for name in unit_list(service_config.get(key)):
                source = f"{parent}/{name}"
                target = self.base / source.lstrip("/")
                target.mkdir(parents=True, exist_ok=True)
                self.mapping[source] = target

    def path(self, value: str) -> str:
        for source, target in self.mapping.items():
            if value == source or value.startswith(source + "/"):
                return str(target) + value[len(source) :]
        return value

    def arg(self, value: str) -> str:
        if value.startswith("-") and "=" in value:
            flag, _, rest = value.partition("=")
            return f"{flag}={self.path(rest)}"
        return self.path(value)

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.path(value)
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        return value


def without_nulls(value: Any) -> Any:
    """As nixpkgs' prometheus module writes its config: no null values, no _module."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None and k != "_module"}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def replace_flag(args: list[str], names: tuple[str, ...], value: str, where: str) -> list[str]:
    out, found = [], False
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in names:
            out.append(f"{flag}={value}")
            found = True
        else:
            out.append(arg)
    if not found:
        raise Failure(f"{where}'s ExecStart has no {names[0]}")
    return out


def flag_value(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def host_port(endpoint: str, where: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise Failure(f"{where}: {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def local_url(host: str, port: int) -> str:
    # A wildcard listener is reached on loopback.
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


# --- Grafana's substitutions ---------------------------------------------------------


def go_expand_env(text: str, lookup: Callable[[str], str]) -> str:
    """Go's os.Expand: $NAME, ${NAME}, $1-style specials; a bad ${ eats itself."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        rest = text[i + 1 :]
        if rest[0] == "{":
            close = rest.find("}")
            if close == -1:
                i += 2  # "${" without "}" is eaten
            elif close == 1:
                i += 3  # "${}" is eaten
            else:
                out.append(lookup(rest[1:close]))
                i += close + 2
        elif rest[0] in "*#$@!?-0123456789":
            out.append(lookup(rest[0]))
            i += 2
        else:
            name = re.match(r"[A-Za-z0-9_]*", rest)
            assert name is not None
            if name.group(0):
                out.append(lookup(name.group(0)))
                i += 1 + len(name.group(0))
            else:
                out.append("$")
                i += 1
    return "".join(out)


def provisioned(value: str, where: str) -> str:
    """What Grafana makes of a string in a provisioning file: `$$` is a literal `$`,
    every other $NAME/${NAME} is expanded from Grafana's environment (empty for
    names the lab does not set), after $__file{…}-style expanders."""
    parts = value.split("$$")
    for part in parts:
        expander = re.search(r"\$__(file|env|vault)\{", part)
        if expander:
            raise Failure(f"{where}: {expander.group(0)}…}} would read Grafana's environment; not emulated here")
    return "$".join(go_expand_env(part, lambda _name: "") for part in parts)


def provisioned_tree(value: Any, where: str) -> Any:
    """Every string of a provisioned data source, as Grafana reads it."""
    if isinstance(value, str):
        return provisioned(value, where)
    if isinstance(value, list):
        return [provisioned_tree(v, where) for v in value]
    if isinstance(value, dict):
        return {k: provisioned_tree(v, where) for k, v in value.items()}
    return value


def parse_duration(text: str) -> float:
    """Grafana's interval strings (e.g. 15s, -5m, 1h30m) in seconds."""
    sign = -1 if text.startswith("-") else 1
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.lstrip("+-"))
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+-"):
        raise Failure(f"{text!r} is not a duration")
    return sign * sum(float(n) * units[u] for n, u in parts)


def seconds_text(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms" if seconds < 1 else f"{int(round(seconds))}s"


@dataclasses.dataclass
class Range:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclasses.dataclass
class PromDatasource:
    url: str
    method: str  # GET or POST, as jsonData.httpMethod says
    scrape_interval: float  # jsonData.timeInterval, else Grafana's 15s


# Grafana asks for one point per pixel of the panel; this test has no panel, so it
# assumes one 1000 pixels wide. The scrape interval is the floor, as in Grafana.
ASSUMED_MAX_DATA_POINTS = 1000


def prometheus_variables(time_range: Range, ds: PromDatasource, max_points: int | None) -> tuple[float, dict[str, str]]:
    """The step and Grafana's built-in variables for one Prometheus query, as its
    Prometheus data source computes them (interval ≥ scrape interval and ≥
    range/11000; $__rate_interval = max($__interval + scrape, 4 × scrape))."""
    points = max_points or ASSUMED_MAX_DATA_POINTS
    interval = max(ds.scrape_interval, math.ceil(time_range.seconds / points), time_range.seconds / 11000)
    rate_interval = max(interval + ds.scrape_interval, 4 * ds.scrape_interval)
    range_s = round(time_range.seconds)
    variables = {
        "__interval_ms": str(int(interval * 1000)),
        "__interval": seconds_text(interval),
        "__range_ms": str(int(time_range.seconds * 1000)),
        "__range_s": str(range_s),
        "__range": f"{range_s}s",
        "__rate_interval_ms": str(int(rate_interval * 1000)),
        "__rate_interval": seconds_text(rate_interval),
    }
    return interval, variables


def substitute(expr: str, variables: dict[str, str], where: str) -> str:
    """Grafana's template syntax: $name, ${name}, ${name:format}, [[name]]. Longer
    names first, so that $__interval does not eat $__interval_ms."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        expr = re.sub(r"\$\{" + re.escape(name) + r"(:[^}]*)?\}", lambda _m: value, expr)
        expr = expr.replace(f"[[{name}]]", value)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _m: value, expr)
    left = re.search(r"\$\{?\w+|\[\[\w+\]\]", expr)
    if left:
        raise Failure(f"{where}: Grafana knows no variable {left.group(0)} here: {expr}")
    return expr


def dashboard_variables(dashboard: dict[str, Any], where: str) -> dict[str, str]:
    """The dashboard's own variables at their current value (types whose value is
    fixed in the file; others need a backend query and are refused clearly)."""
    variables = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") not in ("constant", "custom", "textbox", "interval"):
            raise Failure(f"{where}: variable {var.get('name')} of type {var.get('type')} is not emulated here")
        current = var.get("current", {}).get("value", var.get("query", ""))
        if isinstance(current, list):
            raise Failure(f"{where}: multi-value variable {var.get('name')} is not emulated here")
        variables[var["name"]] = str(current)
    return variables


def relative_range(dashboard: dict[str, Any], now: float) -> Range:
    def point(text: str) -> float:
        if text == "now":
            return now
        if text.startswith("now-"):
            return now - parse_duration(text[4:])
        raise Failure(f"dashboard time {text!r} is not now or now-<duration>")

    time_ = dashboard.get("time", {"from": "now-6h", "to": "now"})
    return Range(point(time_["from"]), point(time_["to"]))


def prom_query(ds: PromDatasource, expr: str, time_range: Range | None, step: float = 0) -> list[dict[str, Any]]:
    """The result of a range query (time_range) or an instant query (None)."""
    if time_range is None:
        path, params = "/api/v1/query", {"query": expr}
    else:
        # Grafana aligns the range to the step.
        start = math.floor(time_range.start / step) * step
        end = math.floor(time_range.end / step) * step
        path, params = "/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
    if ds.method == "POST":
        status, _, body = http(ds.url + path, data=params)
    else:
        status, _, body = http(ds.url + path + "?" + urllib.parse.urlencode(params))
    if status != 200:
        raise Failure(f"Prometheus refused {expr!r} ({status}): {body[:400]}")
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def series_with_data(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Label sets of the series that have a number (not NaN) in them."""
    found = []
    for series in result:
        values = series.get("values") or ([series["value"]] if "value" in series else [])
        if any(math.isfinite(float(v)) for _, v in values):
            found.append(series["metric"])
    return found


# --- one run ---------------------------------------------------------------------------


@dataclasses.dataclass
class Backends:
    """What a run's checks talk to."""

    tempo: str  # Tempo's HTTP API
    prometheus: PromDatasource  # as the provisioned data source reaches it
    datasources: dict[str, dict[str, Any]]  # provisioned, by uid, strings as Grafana reads them
    dashboards: dict[str, Any]  # by file name
    hops: list[checks.Hop]
    entry_url: str
    trace_spans: list[checks.Span]
    started_at: float  # wall-clock time when the chain's hops started
    counters_before: dict[str, float]  # counter_queries() then, by query
    collector_settings: dict[str, Any]  # as the chain's collector runs them
    relay: "OtlpRelay | None"  # what the hops sent, for the chains of RECORDED_CHAINS
    alive: Callable[[], bool]  # fails when a process of the lab has exited
    scratch: Path
    tail_sampling_bin: Path | None  # lab-tail-sampling, when a chain needs it


class InBackground:
    """Runs `work` in a thread; leaving the `with` block waits for it and
    raises what it raised."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:  # handed to the main thread in __exit__
            self.error = error

    def __enter__(self) -> "InBackground":
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        self.thread.join()
        # A failure of the block itself comes first.
        if self.error is not None and exc_type is None:
            raise self.error


class Traffic(Background):
    """Requests through the chain in the background, so that rates have data."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: dict[int, int] = {}
        super().__init__()

    def run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self.stopping.is_set() and time.monotonic() < deadline:
            status, _, _ = http(self.url)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.stopping.wait(0.2)



def in_mount_namespace(binds: list[tuple[str, str]], scratch: Path, argv: list[str]) -> list[str]:
    """argv run in a private mount namespace with `source:destination` bind mounts,
    as systemd's BindPaths= gives the unit. A destination that does not exist on
    this machine is created on a throwaway overlay of its parent, so the machine
    itself is left as it was."""
    lines = ["set -e"]
    overlays: set[str] = set()
    for source, destination in binds:
        parent = os.path.dirname(destination)
        if not os.path.exists(destination) and parent not in overlays:
            overlays.add(parent)
            layer = scratch / f"overlay-{len(overlays)}"
            layer.mkdir(parents=True)
            lines += [
                f"mount -t tmpfs lab-runtime {shlex.quote(str(layer))}",
                f"mkdir {shlex.quote(str(layer / 'upper'))} {shlex.quote(str(layer / 'work'))}",
                "mount -t overlay lab-runtime -o "
                + shlex.quote(f"lowerdir={parent},upperdir={layer}/upper,workdir={layer}/work")
                + f" {shlex.quote(parent)}",
            ]
        lines += [
            f"mkdir -p {shlex.quote(destination)}",
            f"mount --bind {shlex.quote(source)} {shlex.quote(destination)}",
        ]
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "sh", *argv]


def process_env(unit_environment: dict[str, str], where: str) -> dict[str, str]:
    """The unit's environment as the process sees it, with this machine's PATH and HOME."""
    env = {k: systemd_unescape(v, f"{where}'s {k}") for k, v in unit_environment.items()}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["HOME"] = os.environ.get("HOME", "/root")
    return env


def backends_key(system: dict[str, Any]) -> str:
    """What Tempo's and Prometheus' processes are made from: systems with the
    same key can share them."""
    return json.dumps([system["tempoVersion"], system["tempo"], system["prometheus"]], sort_keys=True)


@dataclasses.dataclass
class Lab:
    """Tempo and Prometheus, running, for one chain after another."""

    version: str
    procs: Processes
    tempo_url: str
    otlp: dict[str, tuple[str, int]]  # Tempo's OTLP receivers by OTEL_EXPORTER_OTLP_PROTOCOL
    tempo_settings: dict[str, Any]  # as Tempo runs them
    scratch: Path  # where a chain's collector keeps its config and state
    # The collector left running for the next chain, by what it was made from.
    collector: "tuple[str, Collector] | None" = None


def step(what: str, seconds: float) -> None:
    say(f"  {what}: {seconds:.1f} s")


@contextmanager
def running_backends(version: str, system: dict[str, Any], scratch: Path, prometheus_bin: str) -> Iterator[Lab]:
    """Starts Prometheus, then Tempo, as the system's units would; stops Tempo
    before Prometheus on the way out."""
    if system["tempoVersion"].split(".")[:2] != version.split(".")[:2]:
        raise Failure(f"the evaluated Tempo is {system['tempoVersion']}, the runtime's {version}")
    check_tempo(version)

    state = StateDirs(scratch / "root")
    tempo_unit, prom_unit = system["tempo"]["serviceConfig"], system["prometheus"]["serviceConfig"]
    state.add_unit(tempo_unit)
    state.add_unit(prom_unit)

    # Tempo: its settings with the state directory moved; its unit's flags.
    settings = state.tree(system["tempo"]["settings"])
    (scratch / "tempo.yaml").write_text(json.dumps(settings, indent=2))  # JSON is YAML
    tempo_args = exec_start(tempo_unit, "tempo.service")
    if os.path.basename(tempo_args[0]) != "tempo":
        raise Failure(f"tempo.service runs {tempo_args[0]}, not tempo")
    tempo_args = replace_flag(
        [state.arg(a) for a in tempo_args[1:]], ("--config.file", "-config.file"), str(scratch / "tempo.yaml"), "tempo"
    )
    tempo_argv = [str(TEMPO_RUNNER), version, *tempo_args]
    binds = []
    for entry in unit_list(tempo_unit.get("BindPaths")):
        source, _, destination = entry.lstrip("-").partition(":")
        binds.append((state.path(source), destination.split(":")[0] or source))
    if binds:
        tempo_argv = in_mount_namespace(binds, scratch / "namespace", tempo_argv)

    server = settings.get("server", {})
    if "http_listen_port" not in server:
        raise Failure("Tempo's settings do not set server.http_listen_port")
    tempo_url = local_url(server.get("http_listen_address", ""), server["http_listen_port"])
    receivers = settings.get("distributor", {}).get("receivers", {}).get("otlp", {}).get("protocols", {})
    otlp = {
        protocol: host_port(receivers[key]["endpoint"], f"Tempo's OTLP {key} receiver")
        for protocol, key in (("http/protobuf", "http"), ("grpc", "grpc"))
        if key in receivers
    }

    # Prometheus: Debian's binary with the unit's flags and the module's config.
    prom_args = [state.arg(a) for a in exec_start(prom_unit, "prometheus.service")[1:]]
    prom_settings = system["prometheus"]
    if prom_settings["rules"] or prom_settings["ruleFiles"]:
        raise Failure("Prometheus has rules, which this test cannot carry over from the Nix store")
    config_text = prom_settings["configText"] or json.dumps(without_nulls(prom_settings["config"]))
    (scratch / "prometheus.yml").write_text(config_text)
    prom_args = replace_flag(prom_args, ("--config.file",), str(scratch / "prometheus.yml"), "prometheus")
    listen = flag_value(prom_args, "--web.listen-address")
    if listen is None:
        raise Failure("prometheus.service has no --web.listen-address")
    prom_host, prom_port = host_port(listen, "--web.listen-address")

    ports = [("Tempo's HTTP API", server.get("http_listen_address", ""), server["http_listen_port"])]
    ports.append(("Tempo's gRPC server", server.get("grpc_listen_address", ""), server.get("grpc_listen_port", 9095)))
    ports += [(f"Tempo's OTLP {p} receiver", h, port) for p, (h, port) in otlp.items()]
    ports.append(("Prometheus", prom_host, prom_port))
    check_ports_free(ports)

    procs = Processes(scratch)
    try:
        procs.start(
            "prometheus",
            [prometheus_bin, *prom_args],
            process_env(system["prometheus"]["environment"], "prometheus"),
            state.path(prom_unit.get("WorkingDirectory", "/")),
        )
        step("prometheus ready", procs.wait_ready("prometheus", local_url(prom_host, prom_port) + "/-/ready", READY_TIMEOUT))
        procs.start(
            "tempo",
            tempo_argv,
            process_env(system["tempo"]["environment"], "tempo"),
            state.path(tempo_unit.get("WorkingDirectory", "/")),
        )
        step(f"tempo {version} ready", procs.wait_ready("tempo", tempo_url + "/ready", READY_TIMEOUT))
        yield Lab(version, procs, tempo_url, otlp, settings, scratch)
    finally:
        # Tempo first: Tempo 2.10 was seen to hang in shutdown for minutes
        # when Prometheus went away at the same moment.
        started = time.monotonic()
        procs.stop(list(procs.running))  # hops left by an interrupted chain
        procs.stop(["tempo"])
        procs.stop(["prometheus"])
        step("tempo and prometheus stopped", time.monotonic() - started)


def counter_total(ds: PromDatasource, query: str) -> float:
    """The sum of an instant query's series, 0 without any."""
    return sum(float(series["value"][1]) for series in prom_query(ds, query, None))


def counter_queries(hops: list[checks.Hop]) -> list[str]:
    """The counters a chain's checks wait on: every edge's requests and failed
    requests, and every service's span metrics."""
    edges = checks.service_graph_edges(hops)
    return (
        [checks.service_graph_edge_query(c, s) for c, s in edges]
        + [checks.failed_edge_query(c, s) for c, s in edges]
        + [checks.span_metrics_query(hop["serviceName"]) for hop in hops]
    )


# Chains whose hops' traffic a relay records on its way to the collector.
RECORDED_CHAINS = {"tail-sampling"}

# The collector the runtime has; the evaluated unit runs nixpkgs' own build.
OTELCOL = RUNTIME / "otelcol"
OTELCOL_VERSION = "0.156.0"
COLLECTOR_BINARIES = ("otelcol", "otelcol-contrib")
# systemd's directory specifiers, as the collector's unit uses in WorkingDirectory.
DIRECTORY_SPECIFIERS = {"%S": "/var/lib", "%t": "/run", "%C": "/var/cache", "%L": "/var/log"}


@dataclasses.dataclass
class Collector:
    """A chain's collector, running with the system's settings."""

    receivers: dict[str, tuple[str, int]]  # its OTLP receivers by OTEL_EXPORTER_OTLP_PROTOCOL
    settings: dict[str, Any]  # as it runs them
    moved: dict[str, tuple[str, int]]  # receivers moved to another port: where they listen now


def collector_key(system: dict[str, Any]) -> str:
    """What a collector process is made from: chains with the same key share it."""
    return json.dumps(system["collector"], sort_keys=True)


def check_collector() -> None:
    proc = subprocess.run([str(OTELCOL), OTELCOL_VERSION, "--version"], capture_output=True, text=True)
    if proc.returncode != 0 or OTELCOL_VERSION not in proc.stdout + proc.stderr:
        raise Failure(f"{OTELCOL} {OTELCOL_VERSION} --version said: {proc.stdout}{proc.stderr}")


def unit_directory(value: str, state: StateDirs) -> str:
    for specifier, directory in DIRECTORY_SPECIFIERS.items():
        value = value.replace(specifier, directory)
    return state.path(systemd_unescape(value, "WorkingDirectory"))


def collector_receivers(settings: dict[str, Any]) -> dict[str, tuple[str, int]]:
    protocols = settings.get("receivers", {}).get("otlp", {}).get("protocols", {})
    return {
        protocol: host_port(protocols[key]["endpoint"], f"the collector's OTLP {key} receiver")
        for protocol, key in (("http/protobuf", "http"), ("grpc", "grpc"))
        if key in protocols and "endpoint" in (protocols[key] or {})
    }


def start_collector(lab: Lab, system: dict[str, Any], move: dict[str, int] | None = None) -> Collector:
    """Starts the collector as its unit would, with the system's settings
    (state directories moved into the scratch directory). `move` puts OTLP
    receivers (by protocol) on other ports, for a relay on their own."""
    unit = system["collector"]["serviceConfig"]
    state = StateDirs(lab.scratch / "collector-root")
    state.add_unit(unit)
    settings = state.tree(system["collector"]["settings"])
    receivers = collector_receivers(settings)
    moved: dict[str, tuple[str, int]] = {}
    for protocol, port in (move or {}).items():
        key = "http" if protocol == "http/protobuf" else "grpc"
        if protocol not in receivers:
            raise Failure(f"the collector has no OTLP {key} receiver to move")
        moved[protocol] = (receivers[protocol][0], port)
        settings["receivers"]["otlp"]["protocols"][key]["endpoint"] = f"{receivers[protocol][0]}:{port}"
    config = lab.scratch / "collector.json"
    config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
    args = exec_start(unit, "opentelemetry-collector.service")
    if os.path.basename(args[0]) not in COLLECTOR_BINARIES:
        raise Failure(f"opentelemetry-collector.service runs {args[0]}, not one of {COLLECTOR_BINARIES}")
    args = replace_flag([state.arg(a) for a in args[1:]], ("--config",), f"file:{config}", "the collector")
    listening = {**receivers, **moved}
    check_ports_free([(f"the collector's OTLP receiver ({p})", h, port) for p, (h, port) in listening.items()])
    started = time.monotonic()
    lab.procs.start(
        "collector",
        [str(OTELCOL), OTELCOL_VERSION, *args],
        process_env(system["collector"]["environment"], "opentelemetry-collector"),
        unit_directory(unit.get("WorkingDirectory", "/"), state),
    )
    # No health_check extension in the lab's settings: its receivers
    # answering at all is what says it is up.
    for protocol, (host, port) in listening.items():
        url = local_url(host, port) + ("/v1/traces" if protocol == "http/protobuf" else "")
        wait_until(
            f"the collector's OTLP receiver on {host}:{port}",
            READY_TIMEOUT,
            lambda: lab.procs.assert_alive("collector") and port_open(url, protocol),
            0.2,
        )
    step(f"collector {OTELCOL_VERSION} ready", time.monotonic() - started)
    return Collector(receivers, settings, moved)


def port_open(url: str, protocol: str) -> bool:
    if protocol == "http/protobuf":
        return http(url, timeout=3)[0] != 0  # 405 for a GET: it listens
    host, port = host_port(url.removeprefix("http://"), "the collector's gRPC receiver")
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


def hop_endpoint(env: dict[str, str], unit: str, collector: Collector) -> str:
    """Checks that the hop sends where the collector receives (as in the VM);
    the protocol it uses."""
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol not in collector.receivers:
        raise Failure(f"{unit} sends OTLP over {protocol}, for which the collector has no receiver")
    if "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in env:
        raise Failure(f"{unit} sets OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which this test does not check")
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if endpoint.rstrip("/") != local_url(*collector.receivers[protocol]):
        raise Failure(
            f"{unit} sends to OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r}, "
            f"not to the collector's {protocol} receiver {local_url(*collector.receivers[protocol])}"
        )
    return protocol


def run_chain(
    lab: Lab, chain: str, system: dict[str, Any], service_bin: Path, tail_sampling_bin: Path | None
) -> None:
    """Starts the chain's hops against running backends, checks, stops the hops."""
    hops: list[checks.Hop] = json.loads(system["labJson"])["hops"]
    procs = lab.procs

    # The hops: their units' environment, unchanged; it must name the collector's receiver.
    hop_envs = {}
    for hop in hops:
        unit = hop["unit"].removesuffix(".service")
        if unit not in system["hops"]:
            raise Failure(f"lab.json names {hop['unit']}, which the system does not define")
        hop_envs[unit] = process_env(system["hops"][unit]["environment"], unit)
    evaluated = Collector(collector_receivers(system["collector"]["settings"]), system["collector"]["settings"], {})
    protocols = {unit: hop_endpoint(env, unit, evaluated) for unit, env in hop_envs.items()}
    check_ports_free(
        [
            (f"{u} (HTTP_HOST, HTTP_PORT)", e.get("HTTP_HOST", "127.0.0.1"), int(e["HTTP_PORT"]))
            for u, e in hop_envs.items()
        ]
    )

    datasources = {
        ds["uid"]: provisioned_tree(ds, f"data source {ds['uid']}")
        for ds in (system["datasources"] or {}).get("datasources", [])
    }
    prom_ds = prometheus_datasource(datasources, "prometheus", "the lab")
    counters_before = {query: counter_total(prom_ds, query) for query in counter_queries(hops)}

    units = [hop["unit"].removesuffix(".service") for hop in hops]
    relay: OtlpRelay | None = None
    try:
        if chain in RECORDED_CHAINS:
            # The hops' traffic recorded on its way to the collector, which
            # listens on a free port: the same requests, byte for byte. This
            # collector serves this chain only.
            relay_protocols = set(protocols.values())
            if relay_protocols != {"http/protobuf"}:
                raise Failure(f"the {chain} chain's hops send {relay_protocols}; the relay passes on OTLP/HTTP only")
            procs.stop(["collector"])
            lab.collector = None
            host, port = evaluated.receivers["http/protobuf"]
            free = free_port(host)
            collector = start_collector(lab, system, {"http/protobuf": free})
            relay = OtlpRelay((host, port), local_url(host, free))
        elif lab.collector is not None and lab.collector[0] == collector_key(system):
            collector = lab.collector[1]  # the previous chain's, with the same settings and unit
            say("  collector: the previous chain's (the same settings)")
        else:
            procs.stop(["collector"])
            lab.collector = None
            collector = start_collector(lab, system)
            lab.collector = (collector_key(system), collector)
        started_at, started = time.time(), time.monotonic()
        for unit, env in hop_envs.items():
            procs.start(unit, [str(service_bin)], env, "/")
        for hop, unit in zip(hops, units):
            procs.wait_ready(unit, hop["url"] + "readyz", 30, 0.2)
        step(f"{len(hops)} hops ready", time.monotonic() - started)

        backends = Backends(
            lab.tempo_url,
            prom_ds,
            datasources,
            {},
            hops,
            hops[0]["url"],
            [],
            started_at,
            counters_before,
            collector.settings,
            relay,
            procs.all_alive,
            lab.scratch,
            tail_sampling_bin,
        )
        signature = EXERCISE_SIGNATURES.get(chain)
        if signature:
            # A chain broken on purpose: its signature instead of a whole trace.
            started = time.monotonic()
            signature(backends)
            step(f"the {chain} exercise's signature", time.monotonic() - started)
        else:
            run_checks(procs, backends, system, lab.tempo_settings)
    except Failure as failure:
        # Evidence for the usual culprits: what Tempo, Prometheus and the collector said.
        tempo_said = procs.log_tail("tempo", 12, r"level=(error|warn)|err=[^n]|failed")
        prom_said = procs.log_tail("prometheus", 6, r"level=(error|warn)")
        collector_said = procs.log_tail("collector", 12, r"\t(error|warn)\t|failed|dropp")
        raise Failure(
            f"{failure}"
            + (
                f"\n  the collector's log (errors, warnings):\n{collector_said}"
                if collector_said and "collector exited" not in str(failure)
                else ""
            )
            + (
                f"\n  Tempo's log (errors, warnings):\n{tempo_said}"
                if tempo_said and "tempo exited" not in str(failure)
                else ""
            )
            + (
                f"\n  Prometheus' log (errors, warnings):\n{prom_said}"
                if prom_said and "prometheus exited" not in str(failure)
                else ""
            )
        ) from None
    finally:
        started = time.monotonic()
        # The hops flush their spans to the collector as they stop; the
        # collector then sends on what it holds.
        procs.stop(units)
        if lab.collector is None:
            procs.stop(["collector"])  # a collector of this chain only
        if relay is not None:
            relay.close()
        step("hops stopped" if lab.collector else "hops and collector stopped", time.monotonic() - started)


def run_checks(procs: Processes, backends: Backends, system: dict[str, Any], tempo_settings: dict[str, Any]) -> None:
    """A whole trace, search, metrics and every dashboard query, for a chain that works."""
    hops, tempo_url, entry_url = backends.hops, backends.tempo, backends.entry_url
    services = [hop["serviceName"] for hop in hops]
    alive = procs.all_alive

    # One request that succeeded (a hop with an error rate may fail one on purpose).
    trace_id = ""
    for _ in range(10):
        status, headers, body = http(entry_url, headers={"Accept": "text/html"})
        trace_id = trace_id_of(headers) if status == 200 else ""
        if trace_id:
            break
    if not trace_id:
        raise Failure(f"the entry hop {entry_url} gave no successful traced answer: {status} {body[:300]}")

    spans: list[checks.Span] = []

    def trace_complete() -> bool:
        nonlocal spans
        alive()
        spans = tempo_spans(tempo_url, trace_id)
        return checks.trace_is_complete(spans, hops)

    try:
        took = wait_until(f"all spans of trace {trace_id} in Tempo", TRACE_TIMEOUT, trace_complete, 0.5)
    except Failure as failure:
        raise Failure(f"{failure}; it has {checks.span_summary(spans)}") from None
    try:
        checks.check_trace(spans, hops)
    except AssertionError as error:
        raise Failure(f"trace {trace_id}: {error}") from None
    step(f"trace of {len(spans)} spans in /api/traces", took)

    def search_finds_it() -> None:
        now, started = time.time(), time.monotonic()
        for service in services:
            params = {
                "tags": f"service.name={service}",
                "start": str(int(now - 3600)),
                "end": str(int(now + 60)),
                "limit": "100",
            }
            wait_until(
                f"Tempo's search by service.name={service} finding trace {trace_id}",
                SEARCH_TIMEOUT,
                lambda: checks.search_finds(get_json(f"{tempo_url}/api/search", params), trace_id),
            )
        step("search by service.name finds it", time.monotonic() - started)

    # Tempo's search finds a trace only some seconds after it ended: waited
    # for while the metrics are.
    search = InBackground(search_finds_it)
    prom_ds = backends.prometheus
    backends.trace_spans = spans
    with search, Traffic(entry_url) as traffic:
        started = time.monotonic()
        wanted = [checks.service_graph_edge_query(c, s) for c, s in checks.service_graph_edges(hops)]
        wanted += [checks.span_metrics_query(service) for service in services]
        for query in wanted:
            # Grown since the chain started: an earlier chain's series with the
            # same labels, still in Prometheus, does not count.
            before = backends.counters_before.get(query, 0.0)
            try:
                wait_until(
                    f"{query} in Prometheus, above {before:g}",
                    METRICS_TIMEOUT,
                    lambda: alive() and counter_total(prom_ds, query) > before,
                )
            except Failure as failure:
                generator = tempo_settings.get("metrics_generator", {}).get("storage", {})
                targets = [w.get("url") for w in generator.get("remote_write", [])]
                raise Failure(
                    f"{failure} (Tempo's metrics-generator writes to {targets}; Prometheus is {prom_ds.url})"
                ) from None
        step("service graph edges and span metrics in Prometheus", time.monotonic() - started)

        started = time.monotonic()
        dashboards = {file: json.loads(text) for file, text in (system["dashboards"] or {}).items()}
        if not dashboards:
            raise Failure("Grafana provisions no dashboard")
        backends.dashboards = dashboards
        queries = dashboard_queries(backends) + traces_to_metrics_queries(backends)
        pending = dict(queries)
        last_problem: dict[str, str] = {}

        def every_query_has_data() -> bool:
            alive()
            return run_pending(pending, last_problem)

        try:
            wait_until(
                "every dashboard and trace-to-metrics query returning data", QUERY_TIMEOUT, every_query_has_data, 3
            )
        except Failure as failure:
            details = "\n".join(f"  {where}: {last_problem[where]}" for where in pending)
            raise Failure(f"{failure}; these did not:\n{details}") from None
        step(f"{len(queries)} dashboard and trace-to-metrics queries return data", time.monotonic() - started)
    failed_requests = sum(n for status, n in traffic.statuses.items() if status != 200)
    say(
        f"  background traffic: {sum(traffic.statuses.values())} requests, {failed_requests} not 200 ({traffic.statuses})"
    )


def prometheus_datasource(datasources: dict[str, dict[str, Any]], uid: str, user: str) -> PromDatasource:
    ds = datasources.get(uid)
    if ds is None or ds.get("type") != "prometheus":
        raise Failure(f"{user} uses Prometheus data source {uid!r}, which Grafana does not provision")
    data = ds.get("jsonData") or {}
    return PromDatasource(
        ds["url"].rstrip("/"),
        str(data.get("httpMethod", "POST")).upper(),
        parse_duration(data.get("timeInterval") or "15s"),
    )


# A query check returns "" when the query has data, else what is wrong.
QueryCheck = Callable[[], str]


def run_pending(pending: dict[str, QueryCheck], problems: dict[str, str]) -> bool:
    """Runs each check of `pending`, dropping those that pass and keeping the
    latest problem of the others; true once none is left."""
    for where, run in list(pending.items()):
        problem = run()
        if problem:
            problems[where] = problem
        else:
            del pending[where]
    return not pending


def expect_data(result: list[dict[str, Any]], hops: list[checks.Hop], expr: str) -> str:
    """Data, with every label the query groups by (a label Tempo does not write
    groups everything into one unlabelled series), and when the series are per
    service or per edge, for every service or edge."""
    labels = series_with_data(result)
    if not labels:
        return f"no data for {expr}"
    grouped = {name.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr) for name in group.split(",")}
    grouped -= {"", "le"}  # histogram_quantile consumes le
    for label_set in labels:
        missing_labels = sorted(grouped - set(label_set))
        if missing_labels:
            return f"series without the labels {missing_labels} it groups by ({label_set}) in {expr}"
    services = {hop["serviceName"] for hop in hops}
    if any("service" in ls for ls in labels):
        missing = services - {ls.get("service") for ls in labels}
        if missing:
            return f"no data for services {sorted(missing)} in {expr}"
    if any("client" in ls and "server" in ls for ls in labels):
        edges = set(checks.service_graph_edges(hops)) - {(ls.get("client"), ls.get("server")) for ls in labels}
        if edges:
            return f"no data for edges {sorted(edges)} in {expr}"
    return ""


def dashboard_queries(b: Backends) -> list[tuple[str, QueryCheck]]:
    found: list[tuple[str, QueryCheck]] = []
    for file, dashboard in b.dashboards.items():
        variables = dashboard_variables(dashboard, file)
        panels = [p for row in dashboard.get("panels", []) for p in [row, *row.get("panels", [])]]
        for panel in panels:
            for target in panel.get("targets", []):
                where = f"{file}: panel {panel.get('title')!r} {target.get('refId', '')}"
                ds_ref = target.get("datasource") or panel.get("datasource") or {}
                uid = ds_ref.get("uid") if isinstance(ds_ref, dict) else ds_ref
                ds = b.datasources.get(uid or "")
                if ds is None:
                    raise Failure(f"{where} uses data source {uid!r}, which Grafana does not provision")
                # The hops' own logs and metrics: tests/runtime/signals.py runs those.
                expr = target.get("expr", "")
                if ds["type"] == "loki" or checks.SERVER_DURATION in expr or checks.CLIENT_DURATION in expr:
                    continue
                if ds["type"] == "prometheus":
                    found.append(
                        (where, prometheus_panel_query(b, dashboard, panel, target, uid or "", variables, where))
                    )
                elif ds["type"] == "tempo" and target.get("queryType") == "serviceMap":
                    found.append((where, service_map_query(b, dashboard, ds, target, where)))
                elif ds["type"] == "tempo" and target.get("queryType") == "traceql":
                    found.append((where, traceql_query(b, dashboard, ds, target, variables, where)))
                else:
                    raise Failure(
                        f"{where}: a {ds['type']} query of type {target.get('queryType')} is not emulated here"
                    )
    return found


def prometheus_panel_query(
    b: Backends,
    dashboard: dict[str, Any],
    panel: dict[str, Any],
    target: dict[str, Any],
    uid: str,
    variables: dict[str, str],
    where: str,
) -> QueryCheck:
    ds = prometheus_datasource(b.datasources, uid, where)

    def run() -> str:
        time_range = relative_range(dashboard, time.time())
        step, builtins = prometheus_variables(time_range, ds, panel.get("maxDataPoints"))
        expr = substitute(target["expr"], {**builtins, **variables}, where)
        instant = target.get("instant") and not target.get("range")
        return expect_data(prom_query(ds, expr, None if instant else time_range, step), b.hops, expr)

    return run


def service_map_query(
    b: Backends, dashboard: dict[str, Any], tempo_ds: dict[str, Any], target: dict[str, Any], where: str
) -> QueryCheck:
    """What Grafana's Tempo data source asks Prometheus for a service map: per
    service-graph metric, its rate over the dashboard's range by client and server
    (instant queries). The node graph needs the request totals and durations;
    failed requests only exist when something failed."""
    prom_uid = (tempo_ds.get("jsonData") or {}).get("serviceMap", {}).get("datasourceUid", "")
    ds = prometheus_datasource(b.datasources, prom_uid, f"{where} (the Tempo data source's serviceMap)")
    selector = target.get("serviceMapQuery") or ""
    required = [
        "traces_service_graph_request_total",
        "traces_service_graph_request_server_seconds_sum",
        "traces_service_graph_request_server_seconds_bucket",
    ]

    def run() -> str:
        range_s = round(relative_range(dashboard, time.time()).seconds)
        for metric in required:
            expr = f"sum by (client, server) (rate({metric}{selector}[{range_s}s]))"
            problem = expect_data(prom_query(ds, expr, None), b.hops, expr)
            if problem:
                return problem
        return ""

    return run


def traceql_query(
    b: Backends,
    dashboard: dict[str, Any],
    tempo_ds: dict[str, Any],
    target: dict[str, Any],
    variables: dict[str, str],
    where: str,
) -> QueryCheck:
    def run() -> str:
        time_range = relative_range(dashboard, time.time())
        query = substitute(target.get("query", ""), variables, where)
        params = {
            "q": query,
            "limit": str(target.get("limit", 20)),
            "start": str(int(time_range.start)),
            "end": str(int(time_range.end) + 1),
        }
        answer = get_json(tempo_ds["url"].rstrip("/") + "/api/search", params)
        if answer.get("traces"):
            return ""
        # A query for failures rightly finds none in a chain that cannot fail:
        # then Tempo answering it (200, JSON) is what counts.
        if "status = error" in query and not any(hop["errorRate"] > 0 for hop in b.hops):
            return ""
        return f"Tempo's search for {query!r} found no trace"

    return run


def traces_to_metrics_queries(b: Backends) -> list[tuple[str, QueryCheck]]:
    """The Tempo data source's trace-to-metrics links, opened on each hop's server
    span of the checked trace, as Grafana builds them: $__tags from the span's
    resource and span attributes (tags: key → label), the time range the span's
    plus the configured shifts, then the Prometheus variables."""
    found: list[tuple[str, QueryCheck]] = []
    for uid, ds in b.datasources.items():
        options = (ds.get("jsonData") or {}).get("tracesToMetrics")
        if ds.get("type") != "tempo" or not options:
            continue
        prom = prometheus_datasource(
            b.datasources, options.get("datasourceUid", ""), f"data source {uid}'s tracesToMetrics"
        )
        shift_start = parse_duration(options["spanStartTimeShift"]) if options.get("spanStartTimeShift") else 0
        shift_end = parse_duration(options["spanEndTimeShift"]) if options.get("spanEndTimeShift") else 0
        for query in options.get("queries", []):
            for span in (s for s in b.trace_spans if checks.kind(s) == "SERVER"):
                where = f"data source {uid}: trace to metrics {query.get('name')!r} on {span['service']}"
                found.append((where, trace_link_query(b, prom, options, query, span, shift_start, shift_end, where)))
    return found


def trace_link_query(
    b: Backends,
    prom: PromDatasource,
    options: dict[str, Any],
    query: dict[str, Any],
    span: checks.Span,
    shift_start: float,
    shift_end: float,
    where: str,
) -> QueryCheck:
    expr = query.get("query") or ""
    if not expr:
        raise Failure(f"{where}: no query (Grafana would use its own default)")
    tags = options.get("tags") or []
    if tags and "$__tags" in expr:
        values = {**span["resource"], **span["attrs"]}
        labels = [f'{t.get("value") or t["key"]}="{values[t["key"]]}"' for t in tags if values.get(t["key"])]
        expr = expr.replace("$__tags", ", ".join(labels))
    start = span["startNs"] / 1e9
    time_range = Range(start + shift_start, start + span["durationMs"] / 1000 + shift_end)

    def run() -> str:
        # The span's range reaches into the future; Prometheus has data up to now.
        step, builtins = prometheus_variables(time_range, prom, None)
        final = substitute(expr, builtins, where)
        return expect_data(prom_query(prom, final, time_range, step), b.hops, final)

    return run




def errors_signature(b: Backends) -> None:
    """The errors exercise: the leaf fails part of its requests, and the
    service graph shows the failing edge into it."""
    client, server = b.hops[1]["serviceName"], b.hops[2]["serviceName"]
    query = checks.failed_edge_query(client, server)
    before = b.counters_before.get(query, 0.0)
    with Traffic(b.entry_url) as traffic:
        wait_until(
            f"{query} above {before:g} in Prometheus",
            METRICS_TIMEOUT,
            lambda: counter_total(b.prometheus, query) > before,
        )
    if not any(status != 200 for status in traffic.statuses):
        raise Failure(f"no request failed: {traffic.statuses}")


def broken_propagation_signature(b: Backends) -> None:
    """The broken-propagation exercise: the caller's trace ends at the cut
    hop's CLIENT span, and the hop below starts traces of its own."""
    entry, cut, lost = (hop["serviceName"] for hop in b.hops)
    since = int(time.time()) - 60
    status, headers, _ = http(b.entry_url)
    trace_id = trace_id_of(headers)
    if status != 200 or not trace_id:
        raise Failure(f"the entry answered {status} without a trace id")
    spans: list[checks.Span] = []

    def callers_part() -> bool:
        nonlocal spans
        spans = tempo_spans(b.tempo, trace_id)
        return any(s["service"] == entry for s in spans) and any(
            s["service"] == cut and checks.kind(s) == "CLIENT" for s in spans
        )

    wait_until(f"the caller's part of trace {trace_id} in Tempo", TRACE_TIMEOUT, callers_part, 0.5)
    try:
        checks.check_cut_trace(spans, cut, lost)
    except AssertionError as error:
        raise Failure(f"trace {trace_id}: {error}") from None
    params = {"tags": f"service.name={lost}", "start": str(since), "end": str(since + 3600), "limit": "100"}

    def orphan_found() -> bool:
        answer = get_json(f"{b.tempo}/api/search", params)
        # Only traces of this chain: an earlier chain on the same Tempo may
        # have had the same service names.
        answer["traces"] = [
            t for t in answer.get("traces", []) if int(t.get("startTimeUnixNano", 0)) >= b.started_at * 1e9
        ]
        return bool(checks.traces_started_at(answer, lost))

    with Traffic(b.entry_url):
        wait_until(f"a trace that starts at {lost} in Tempo's search", SEARCH_TIMEOUT, orphan_found)


def tail_sampling_signature(b: Backends) -> None:
    """The tail-sampling exercise on the real `tail_sampling` processor, and
    the runner's imitation on the same traffic (tail_sampling_check.py)."""
    if b.relay is None or b.tail_sampling_bin is None:
        raise Failure("the tail-sampling chain runs without its relay or lab-tail-sampling")
    tail_sampling_check.measure(
        b.tempo, b.entry_url, b.hops, b.collector_settings, b.relay, b.tail_sampling_bin, b.scratch, b.alive
    )


EXERCISE_SIGNATURES: dict[str, Callable[[Backends], None]] = {
    "errors": errors_signature,
    "broken-propagation": broken_propagation_signature,
    "tail-sampling": tail_sampling_signature,
}


def main() -> int:
    tempos = available_tempos()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tempo", action="append", choices=tempos, help="a Tempo of ../shared/lab-runtime (default: all)"
    )
    parser.add_argument("--chain", action="append", choices=CHAINS, help="which chain (default: all)")
    args = parser.parse_args()
    if not tempos:
        say(f"nixos_lab: no Tempo in {RUNTIME}")
        return 1
    versions = args.tempo or tempos
    # In CHAINS' order whatever the flags' order: the default chain first, on fresh backends.
    chains = [c for c in CHAINS if c in (args.chain or CHAINS)]

    try:
        with terminated_like_interrupted():
            return run_all(versions, chains)
    except KeyboardInterrupt as signalled:
        say(f"\nnixos_lab: interrupted ({signalled or 'SIGINT'}); what it had started is stopped")
        return 130


def run_all(versions: list[str], chains: list[str]) -> int:
    try:
        prometheus_bin = prometheus_binary(install=True)
        assert prometheus_bin is not None
        service_bin = service_binary()
        tail_sampling_bin = tail_sampling_binary() if RECORDED_CHAINS & set(chains) else None
        check_collector()
        systems = evaluate(versions, chains)
    except Failure as failure:
        say(f"nixos_lab: {failure}")
        return 1
    results: list[tuple[str, bool, float]] = []
    for version in versions:
        # Chains whose systems run Tempo and Prometheus alike share them.
        groups: dict[str, list[str]] = {}
        for chain in chains:
            groups.setdefault(backends_key(systems[f"{version}/{chain}"]), []).append(chain)
        for group in groups.values():
            results += run_group(version, group, systems, prometheus_bin, service_bin, tail_sampling_bin)

    say("\nnixos_lab:")
    for name, ok, seconds in results:
        say(f"  {'ok    ' if ok else 'FAILED'} {name}  {seconds:.0f} s")
    passed = sum(ok for _, ok, _ in results)
    say(f"nixos_lab: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def run_group(
    version: str,
    group: list[str],
    systems: dict[str, Any],
    prometheus_bin: str,
    service_bin: Path,
    tail_sampling_bin: Path | None,
) -> list[tuple[str, bool, float]]:
    """One Tempo and one Prometheus for the chains of `group`, one after another."""
    results: list[tuple[str, bool, float]] = []
    name = f"tempo {version}: backends for the {', '.join(group)} chains"
    say(f"\n--- {name}")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="nixos-lab-"))
    try:
        with running_backends(version, systems[f"{version}/{group[0]}"], scratch, prometheus_bin) as lab:
            results.append((name + " started", True, time.monotonic() - started))
            for chain in group:
                chain_name = f"tempo {version} × {chain} chain"
                say(f"\n--- {chain_name}")
                started = time.monotonic()
                try:
                    run_chain(lab, chain, systems[f"{version}/{chain}"], service_bin, tail_sampling_bin)
                    results.append((chain_name, True, time.monotonic() - started))
                except Failure as failure:
                    say(f"FAILED: {chain_name}: {failure}")
                    results.append((chain_name, False, time.monotonic() - started))
    except Failure as failure:
        say(f"FAILED: {name}: {failure}")
        results.append((name, False, time.monotonic() - started))
        done = {n for n, _, _ in results}
        for chain in group:
            chain_name = f"tempo {version} × {chain} chain"
            if chain_name not in done:
                results.append((chain_name + " (not run: no backends)", False, 0.0))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
