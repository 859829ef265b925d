#!/usr/bin/env python3
"""Where a hop's CPU time goes, by concern, with every signal on and off.

`run` starts lab-bench, waits until its throughput rounds begin, and
attaches `perf record` to one hop of three of its chains: sampled with
traces, logs and metrics; sampled with traces only; SDK disabled. The hops
are told apart by their environment, which lab-bench sets. `fold` (also
run at the end of `run`) reads the recordings back and sums each sample's
CPU time into one concern (span creation, OTLP export, logs, metrics,
HTTP serving, ...), per request of the lab-bench run.

    cargo build --locked --profile profiling --bin microservice --bin lab-bench
    python3 tests/bench/profile_signals.py run --out /tmp/profile -- \\
        target/profiling/lab-bench --service-bin target/profiling/microservice
    python3 tests/bench/profile_signals.py fold /tmp/profile

It needs `perf` and the right to record the hops (root, or
kernel.perf_event_paranoid <= 1 for their kernel side too). The profiling
build keeps symbols; the release build is stripped.

A sample goes to the concern of the innermost frame of its call stack that
names one (so `malloc` called while a span is built counts as the span's);
the export threads of the SDK go by thread. What no frame names (the
unwinder stopped early, or only the runtime is on the stack) is counted as
`runtime: scheduling, ...`. `python3 -m doctest` on this file checks how
frames are named and threads told apart.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

# lab-bench's progress line once every chain of mode 1 is started and warm.
ROUNDS_BEGIN = "mode 1: throughput, round 1 of"
# ... and once mode 1 is over (its chains are stopped before it).
ROUNDS_END = "mode 1: sampled at half capacity"

# The settings profiled: name -> (key of lab-bench's JSON report, test on
# a hop's environment). The first chain that passes a test is taken:
# lab-bench starts the HTML chain before the JSON one of the same setting.
SETTINGS: dict[str, str] = {
    "all signals": "sampled",
    "traces only": "sampled_traces_only",
    "SDK disabled": "disabled",
}


def setting_of(env: dict[str, str]) -> str | None:
    if env.get("OTEL_SDK_DISABLED") == "true":
        return "SDK disabled"
    if env.get("OTEL_TRACES_SAMPLER") != "always_on":
        return None
    if env.get("OTEL_LOGS_EXPORTER") == "none":
        return "traces only"
    return "all signals"


# Concerns, tried in this order on each frame from the leaf up; the first
# frame that matches one decides. Generic code (the runtime, sockets, the
# allocator, hashing) matches none, so it counts for whoever called it.
CONCERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "stdout log line (fmt layer)",
        re.compile(r"tracing_subscriber::fmt|log_format|LogLine|Stdout|stdio"),
    ),
    (
        "logs: appender bridge, log processor",
        re.compile(r"opentelemetry_appender_tracing|opentelemetry_sdk::logs"),
    ),
    (
        "metrics: histogram record",
        re.compile(
            r"opentelemetry_sdk::metrics|opentelemetry::metrics|telemetry::metrics|ClientMetrics"
        ),
    ),
    (
        "spans: create, record, end (layer, SDK)",
        re.compile(
            r"tracing_opentelemetry|opentelemetry_sdk::trace|opentelemetry::trace|"
            r"reqwest_tracing|opentelemetry_sdk::resource|SdkTracer|SpanProcessor"
        ),
    ),
    (
        "context and propagation",
        re.compile(
            r"opentelemetry::propagation|opentelemetry_sdk::propagation|opentelemetry_http|"
            r"opentelemetry::baggage|opentelemetry::context|TextMapCompositePropagator"
        ),
    ),
    (
        "tracing subscriber: registry, filters",
        re.compile(r"tracing_subscriber|tracing_core|sharded_slab|tracing::span|tracing::instrument"),
    ),
    # The route, the server-span middleware and the handler are inlined into
    # poem's endpoint closure; where perf finds no inline frame for an
    # address, that closure's name is all it shows.
    (
        "handler and server-span middleware (ours)",
        re.compile(
            r"^<poem::endpoint::map_to_response::MapToResponse|microservice::routes|"
            r"microservice::contract|server_span|serde_json"
        ),
    ),
    ("template render (minijinja)", re.compile(r"minijinja|microservice::templates")),
    (
        "downstream call (reqwest, hyper client)",
        re.compile(
            r"reqwest|hyper_util::client|hyper::client|dispatch::Client|microservice::downstream"
        ),
    ),
    (
        "HTTP serving (poem, hyper server)",
        re.compile(r"poem::|hyper::server|hyper_util::server|dispatch::Server|h1::role::Server"),
    ),
]
OTHER = "runtime: scheduling, context switches, epoll, other"

# Threads of the SDK's own: their whole stack is the export of one signal.
EXPORT_THREADS: dict[str, str] = {
    "OpenTelemetry.T": "traces",
    "OpenTelemetry.L": "logs",
    "OpenTelemetry.M": "metrics",
}
# opentelemetry-otlp's blocking HTTP client runs a thread of its own per
# exporter, started just before the exporter's processor thread.
HTTP_CLIENT_THREAD = "reqwest-interna"

ALLOCATOR = re.compile(
    r"^(malloc|free|realloc|calloc|cfree|_int_malloc|_int_free|_int_realloc|"
    r"malloc_consolidate|__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|"
    r"tcache_\w+|unlink_chunk|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_\w+|"
    r"alloc::alloc::\w+)\b"
)


@dataclass
class Target:
    setting: str
    hop: int
    pid: int
    # tid -> thread name, read when the recording starts.
    threads: dict[int, str]


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def children(pid: int) -> list[int]:
    """Child processes of `pid`, oldest first."""
    found: list[tuple[int, int]] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, ... starttime is field 22 overall.
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(stat.parent.name)))
    return [child for _, child in sorted(found)]


def threads(pid: int) -> dict[int, str]:
    names: dict[int, str] = {}
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names[int(comm.parent.name)] = comm.read_text().strip()
        except OSError:
            continue
    return names


def find_targets(bench: int, hop: int) -> list[Target]:
    service = f"microservice-{hop}"
    targets: dict[str, Target] = {}
    for pid in children(bench):
        env = environment(pid)
        setting = setting_of(env)
        if setting is None or env.get("OTEL_SERVICE_NAME") != service or setting in targets:
            continue
        targets[setting] = Target(setting, hop, pid, threads(pid))
    missing = set(SETTINGS) - set(targets)
    if missing:
        raise SystemExit(f"profile_signals: no hop {hop} found for {sorted(missing)} among lab-bench's children")
    return [targets[name] for name in SETTINGS]


def file_stem(setting: str) -> str:
    return setting.replace(" ", "-").lower()


def follow(stream: IO[str], seen: list[str], changed: threading.Condition) -> None:
    """Copies lab-bench's progress to stderr, keeping each line for `run`."""
    for line in stream:
        sys.stderr.write(line)
        with changed:
            seen.append(line)
            changed.notify_all()
    with changed:
        seen.append("")  # end of output
        changed.notify_all()


def wait_for(text: str, seen: list[str], changed: threading.Condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with changed:
        while not any(text in line for line in seen):
            if "" in seen:
                raise SystemExit(f"profile_signals: lab-bench ended before printing {text!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"profile_signals: lab-bench did not print {text!r} within {timeout:.0f} s")
            changed.wait(left)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = list(args.bench)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("profile_signals: give the lab-bench command after --")
    command += ["--json-out", str(out / "bench.json")]
    with open(out / "bench.txt", "w") as table:
        bench = subprocess.Popen(command, stdout=table, stderr=subprocess.PIPE, text=True)
    assert bench.stderr is not None
    seen: list[str] = []
    changed = threading.Condition()
    reader = threading.Thread(target=follow, args=(bench.stderr, seen, changed), daemon=True)
    reader.start()
    recorders: list[subprocess.Popen[bytes]] = []
    try:
        # Building the service and starting five chains takes a while.
        wait_for(ROUNDS_BEGIN, seen, changed, timeout=1800)
        targets = find_targets(bench.pid, args.hop)
        for target in targets:
            data = out / f"{file_stem(target.setting)}.data"
            recorders.append(
                subprocess.Popen(
                    ["perf", "record", "--quiet", "-F", str(args.frequency), "-g",
                     "--call-graph", f"dwarf,{args.stack}", "-o", str(data), "-p", str(target.pid)],
                    stdout=subprocess.DEVNULL,
                )
            )
        (out / "targets.json").write_text(
            json.dumps([t.__dict__ for t in targets], indent=2) + "\n"
        )
        wait_for(ROUNDS_END, seen, changed, timeout=3600)
        # The chains are gone by now, so each recorder has ended or is ending.
        for recorder in recorders:
            recorder.wait(timeout=60)
        if bench.wait() not in (0, 3):  # 3: a target was missed, still a run
            raise SystemExit(f"profile_signals: lab-bench failed ({bench.returncode})")
    finally:
        for recorder in recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=60)
        if bench.poll() is None:
            bench.terminate()
            bench.wait(timeout=60)
    reader.join(timeout=10)
    fold(out, sys.stdout)


@dataclass
class Sample:
    thread: str
    tid: int
    ns: int
    # Frame names as matched (see `matched_name`), leaf first, inlined
    # frames included.
    frames: list[str]
    kernel_leaf: bool


def own_path(name: str) -> str:
    """`name` without generic arguments: `a::B<T>::f<U>` -> `a::B::f`.

    The linker folds identical instances of a generic function into one,
    whose name then carries whichever type arguments it kept (`grow_one`
    of a Vec of spans' attributes may be named after a metrics type), so
    only a function's own path says where it is. A qualified self type,
    `<a::B as c::D>::f`, is kept.

    >>> own_path("grow_one<opentelemetry_sdk::metrics::data::GaugeDataPoint<u64>, alloc::alloc::Global>")
    'grow_one'
    >>> own_path("<poem::endpoint::map_to_response::MapToResponse<E> as poem::endpoint::Endpoint>::call")
    '<poem::endpoint::map_to_response::MapToResponse as poem::endpoint::Endpoint>::call'
    >>> own_path("core::ptr::drop_in_place<alloc::boxed::Box<dyn Fn() -> u8>>")
    'core::ptr::drop_in_place'
    """
    out: list[str] = []
    skipping: list[bool] = []
    previous = ""
    for char in name:
        if char == "<":
            skip = bool(skipping and skipping[-1]) or previous.isalnum() or (previous != "" and previous in "_}")
            skipping.append(skip)
            if not skip:
                out.append(char)
        elif char == ">" and previous != "-" and skipping:
            if not skipping.pop():
                out.append(char)
        elif not (skipping and skipping[-1]):
            out.append(char)
        previous = char
    return "".join(out)


# Where the standard library's generic helpers live.
STD_PREFIXES = ("alloc::", "core::", "std::", "<alloc::", "<core::", "<std::")


def matched_name(name: str, in_std_helper: bool) -> str:
    """What a frame is matched by. Inlined frames have no path of their
    own; their generic arguments name the code they run
    (`poll_flush<reqwest::connect::sealed::Conn, ...>`), and are kept,
    except inside a function of the standard library: there the linker may
    have folded identical instances into one (see `own_path`)."""
    return own_path(name) if in_std_helper else name


HEADER = re.compile(r"^(?P<comm>.+?)\s+(?P<tid>\d+)\s+(?P<period>\d+)\s*$")
FRAME = re.compile(r"^\s*[0-9a-f]+ (?P<sym>.*) \((?P<dso>[^()]*)\)$")


def samples(data: Path) -> Iterator[Sample]:
    script = subprocess.Popen(
        ["perf", "script", "-i", str(data), "-F", "comm,tid,period,ip,sym,dso"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    assert script.stdout is not None
    current: Sample | None = None
    in_std_helper = False
    for line in script.stdout:
        line = line.rstrip("\n")
        if not line.strip():
            if current is not None:
                yield current
            current = None
            continue
        if not line.startswith(("\t", " ")):
            header = HEADER.match(line)
            if header is None:
                raise SystemExit(f"profile_signals: unexpected perf script line: {line!r}")
            current = Sample(header["comm"], int(header["tid"]), int(header["period"]), [], False)
            continue
        frame = FRAME.match(line)
        if current is None or frame is None:
            continue
        if not current.frames:
            current.kernel_leaf = frame["dso"] == "kernel.kallsyms" or frame["dso"].startswith("[kernel")
        # A function's symbol comes first, then what is inlined at that address.
        if frame["dso"] != "inlined":
            in_std_helper = own_path(frame["sym"]).startswith(STD_PREFIXES)
        current.frames.append(matched_name(frame["sym"], in_std_helper))
    if current is not None:
        yield current
    if script.wait() != 0:
        raise SystemExit(f"profile_signals: perf script -i {data} failed")


def export_signal_by_thread(names: dict[int, str]) -> dict[int, str]:
    """Which signal each export and HTTP client thread serves.

    >>> export_signal_by_thread({1: "microservice", 5: "reqwest-interna",
    ...     6: "OpenTelemetry.T", 7: "reqwest-interna", 8: "OpenTelemetry.M"})
    {5: 'traces', 6: 'traces', 7: 'metrics', 8: 'metrics'}
    """
    signal_of: dict[int, str] = {}
    pending: list[int] = []
    for tid in sorted(names):
        name = names[tid]
        if name == HTTP_CLIENT_THREAD:
            pending.append(tid)
        elif name in EXPORT_THREADS:
            for client in pending:
                signal_of[client] = EXPORT_THREADS[name]
            signal_of[tid] = EXPORT_THREADS[name]
            pending = []
    return signal_of


def concern(sample: Sample, signal_of: dict[int, str]) -> str:
    if sample.thread in EXPORT_THREADS:
        return f"{EXPORT_THREADS[sample.thread]} export thread: batch, convert, encode"
    if sample.thread == HTTP_CLIENT_THREAD:
        return f"{signal_of.get(sample.tid, 'unknown signal')} export: HTTP client thread"
    for frame in sample.frames:
        for name, pattern in CONCERNS:
            if pattern.search(frame):
                return name
    return OTHER


@dataclass
class Profile:
    requests: int
    total_ns: int
    by_concern: dict[str, int]
    kernel_ns: dict[str, int]
    allocator_ns: dict[str, int]


def profile(out: Path, target: dict[str, object], report: dict[str, object]) -> Profile:
    setting = str(target["setting"])
    names = target["threads"]
    assert isinstance(names, dict)
    signal_of = export_signal_by_thread({int(k): str(v) for k, v in names.items()})
    throughput = report["throughput"]
    assert isinstance(throughput, dict)
    requests = int(throughput[SETTINGS[setting]]["requests"])
    by_concern: dict[str, int] = defaultdict(int)
    kernel: dict[str, int] = defaultdict(int)
    allocator: dict[str, int] = defaultdict(int)
    total = 0
    for sample in samples(out / f"{file_stem(setting)}.data"):
        name = concern(sample, signal_of)
        by_concern[name] += sample.ns
        total += sample.ns
        if sample.kernel_leaf:
            kernel[name] += sample.ns
        elif sample.frames and ALLOCATOR.match(sample.frames[0]):
            allocator[name] += sample.ns
    return Profile(requests, total, by_concern, kernel, allocator)


def fold(out: Path, to: IO[str]) -> None:
    for name in ("targets.json", "bench.json"):
        if not (out / name).is_file():
            raise SystemExit(f"profile_signals: {out / name} is missing: is {out} a directory `run` wrote?")
    targets = json.loads((out / "targets.json").read_text())
    report = json.loads((out / "bench.json").read_text())
    profiles = {str(t["setting"]): profile(out, t, report) for t in targets}
    hop = targets[0]["hop"]
    order = [name for name, _ in CONCERNS] + [OTHER]
    names = sorted(
        {n for p in profiles.values() for n in p.by_concern},
        key=lambda n: (order.index(n) if n in order else -1, n),
    )
    columns = list(profiles)
    to.write(f"hop {hop}: CPU µs per request (share of the hop's samples); "
             "of which in the kernel / in the allocator, µs\n\n")
    to.write("| concern | " + " | ".join(columns) + " |\n")
    to.write("|---|" + "---|" * len(columns) + "\n")

    def cell(p: Profile, name: str) -> str:
        ns = p.by_concern.get(name, 0)
        if ns == 0:
            return "-"
        per = ns / 1000 / max(p.requests, 1)
        share = 100 * ns / max(p.total_ns, 1)
        kernel = p.kernel_ns.get(name, 0) / 1000 / max(p.requests, 1)
        alloc = p.allocator_ns.get(name, 0) / 1000 / max(p.requests, 1)
        return f"{per:.1f} ({share:.0f} %; {kernel:.1f} / {alloc:.1f})"

    for name in names:
        to.write(f"| {name} | " + " | ".join(cell(profiles[c], name) for c in columns) + " |\n")
    totals = []
    for c in columns:
        p = profiles[c]
        kernel = sum(p.kernel_ns.values()) / 1000 / max(p.requests, 1)
        alloc = sum(p.allocator_ns.values()) / 1000 / max(p.requests, 1)
        totals.append(f"{p.total_ns / 1000 / max(p.requests, 1):.1f} (100 %; {kernel:.1f} / {alloc:.1f})")
    to.write("| **hop total** | " + " | ".join(totals) + " |\n")
    to.write("| requests | " + " | ".join(str(profiles[c].requests) for c in columns) + " |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("run", help="run lab-bench and profile one hop of three chains")
    record.add_argument("--out", required=True, help="directory for the recordings and lab-bench's report")
    record.add_argument("--hop", type=int, default=1, help="which hop of each chain (1 = the entry)")
    record.add_argument("--frequency", type=int, default=999, help="samples per second of CPU time")
    record.add_argument("--stack", type=int, default=32768, help="bytes of stack copied per sample")
    record.add_argument("bench", nargs=argparse.REMAINDER, help="-- the lab-bench command")
    again = commands.add_parser("fold", help="print the table of an earlier run")
    again.add_argument("out", help="the directory `run` wrote")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        fold(Path(args.out), sys.stdout)


if __name__ == "__main__":
    main()
