#!/usr/bin/env python3
"""`otelcol validate` on every collector configuration the lab generates.

The configurations come from the flake's evaluation (../shared/nix-eval/check-flake):
the lab VM's own (the exercise it boots into), each exercise's specialisation, and
`nix run .#local`'s one per exercise. Each distinct configuration is validated by a
real collector; a rejected one fails the run, naming every exercise that uses it.
Two broken variants of the default (an unknown processor key, a pipeline naming a
missing exporter) must be rejected too, so that a validator which accepts anything
cannot pass. Skips itself, saying so, where ../shared/lab-runtime is absent.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
CHECK_FLAKE = SHARED / "nix-eval" / "check-flake"
OTELCOL = SHARED / "lab-runtime" / "otelcol"
OTELCOL_VERSION = "0.156.0"

# Every collector configuration of the flake, by where it is used.
EXPRESSION = """
let
  vm = o.nixosConfigurations.lab.config;
  collectorOf = cfg: cfg.services.opentelemetry-collector.settings;
  local = o.packages.x86_64-linux.lab-local.passthru.settings.collector;
in
{ "vm:${vm.services.tracing-lab.exercise}" = collectorOf vm; }
// lib.mapAttrs' (name: s: lib.nameValuePair "vm:${name}" (collectorOf s.configuration)) vm.specialisation
// lib.mapAttrs' (name: settings: lib.nameValuePair "local:${name}" settings) local
"""


def fail(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def evaluate() -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run([str(CHECK_FLAKE), str(ROOT), "--eval", EXPRESSION], capture_output=True, text=True)
    if proc.returncode != 0:
        fail("evaluating the collector configurations failed:\n" + "\n".join(proc.stderr.splitlines()[-25:]))
    configs: dict[str, Any] = json.loads(proc.stdout)
    print(f"evaluated {len(configs)} collector configurations in {time.monotonic() - started:.0f} s")
    return configs


def validate(settings: Any, workdir: Path, label: str) -> tuple[bool, str]:
    path = workdir / f"{label}.json"
    path.write_text(json.dumps(settings))
    proc = subprocess.run(
        [str(OTELCOL), OTELCOL_VERSION, "validate", f"--config=file:{path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def broken_variants(settings: dict[str, Any]) -> dict[str, Any]:
    unknown_key = copy.deepcopy(settings)
    first_processor = sorted(unknown_key["processors"])[0]
    unknown_key["processors"][first_processor]["no_such_key"] = 1
    missing_exporter = copy.deepcopy(settings)
    missing_exporter["service"]["pipelines"]["traces"]["exporters"].append("otlp_http/nowhere")
    return {"an unknown processor key": unknown_key, "a pipeline naming a missing exporter": missing_exporter}


def main() -> None:
    if not OTELCOL.exists() or not CHECK_FLAKE.exists():
        print(f"skipped: {OTELCOL} or {CHECK_FLAKE} is absent; nix flake check validates at build time")
        return
    configs = evaluate()
    # The same settings in many places are validated once.
    users: dict[str, list[str]] = {}
    for where, settings in sorted(configs.items()):
        users.setdefault(json.dumps(settings, sort_keys=True), []).append(where)
    rejected = []
    with tempfile.TemporaryDirectory(prefix="collector-configs-") as tmp:
        workdir = Path(tmp)
        for index, (text, where) in enumerate(users.items()):
            ok, output = validate(json.loads(text), workdir, f"config-{index}")
            print(f"{'valid' if ok else 'REJECTED'}: {', '.join(where)}")
            if not ok:
                rejected.append(f"{', '.join(where)}:\n{output}")
        default = configs.get("vm:baseline") or next(iter(configs.values()))
        for what, settings in broken_variants(default).items():
            ok, _ = validate(settings, workdir, "broken")
            if ok:
                rejected.append(f"otelcol validate accepted {what}: this check proves nothing")
            else:
                print(f"rejected as it must be: {what}")
    if rejected:
        fail("\n\n".join(rejected))
    print(f"otelcol {OTELCOL_VERSION} validate: {len(users)} distinct configurations, used {len(configs)} times, all valid")


if __name__ == "__main__":
    main()
