#!/usr/bin/env python3
"""`otelcol validate` on every collector configuration the lab generates.

The configurations come from the flake's evaluation: the lab VM's own (the
exercise it boots into), each exercise's specialisation (with tail sampling
scaled out, its second tier's collectors too), and `nix run .#local`'s one per
exercise. Each distinct configuration is validated by a real collector;
a rejected one fails the run, naming every place that uses it. Two broken
variants of the VM's own (an unknown processor key, a pipeline naming a missing
exporter) must be rejected too, so that a validator that accepts anything cannot
pass. Skips itself, saying so, where ../shared/lab-runtime is absent.
"""

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from support import CHECK_FLAKE, RUNTIME, Failure, check_flake_eval, say

OTELCOL = RUNTIME / "otelcol"
OTELCOL_VERSION = "0.156.0"

# Every collector configuration of the flake, by where it is used.
EXPRESSION = """
let
  vm = o.nixosConfigurations.lab.config;
  collectorOf = cfg: cfg.services.opentelemetry-collector.settings;
  local = o.packages.x86_64-linux.lab-local.passthru.settings.collector;
  # Tail sampling scaled out: the second tier's collectors, by unit.
  samplersOf = where: cfg: lib.mapAttrs' (unit: lib.nameValuePair "${where}:${unit}")
    cfg.services.tracing-lab.collector.tailSampling.samplerSettings;
in
{ "vm:${vm.services.tracing-lab.exercise}" = collectorOf vm; }
// lib.mapAttrs' (name: s: lib.nameValuePair "vm:${name}" (collectorOf s.configuration)) vm.specialisation
// samplersOf "vm:${vm.services.tracing-lab.exercise}" vm
// lib.concatMapAttrs (name: s: samplersOf "vm:${name}" s.configuration) vm.specialisation
// lib.concatMapAttrs (name: lib.mapAttrs' (process: lib.nameValuePair "local:${name}:${process}"))
  o.packages.x86_64-linux.lab-local.passthru.settings.samplers
// lib.mapAttrs' (name: settings: lib.nameValuePair "local:${name}" settings) local
"""


def validate(settings: Any, path: Path) -> tuple[bool, str]:
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


def run(workdir: Path) -> None:
    configs: dict[str, Any] = check_flake_eval(EXPRESSION, "every collector configuration")
    # The same settings in many places are validated once.
    users: dict[str, list[str]] = {}
    for where, settings in sorted(configs.items()):
        users.setdefault(json.dumps(settings, sort_keys=True), []).append(where)
    rejected = []
    for index, (text, places) in enumerate(users.items()):
        ok, output = validate(json.loads(text), workdir / f"config-{index}.json")
        say(f"{'valid' if ok else 'REJECTED'}: {', '.join(places)}")
        if not ok:
            rejected.append(f"{', '.join(places)}:\n{output}")
    own = next(settings for where, settings in configs.items() if where.startswith("vm:"))
    for what, settings in broken_variants(own).items():
        ok, _ = validate(settings, workdir / "broken.json")
        if ok:
            rejected.append(f"otelcol validate accepted {what}: this check proves nothing")
        else:
            say(f"rejected, as it must be: {what}")
    if rejected:
        raise Failure("\n\n".join(rejected))
    say(f"otelcol {OTELCOL_VERSION} validate: {len(users)} distinct configurations, used in {len(configs)} places")


def main() -> int:
    if not OTELCOL.exists() or not CHECK_FLAKE.exists():
        say(f"skipped: {OTELCOL} or {CHECK_FLAKE} is absent; nix flake check validates at build time")
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="collector-configs-") as scratch:
            run(Path(scratch))
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
