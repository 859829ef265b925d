#!/usr/bin/env python3
"""Whether a trace as Tempo returns it (/api/traces/<id>) is a whole request
through the chain that a lab.json describes: spans from every hop's service and
no other, as many as the chain emits (nixos/tests/lab_checks.py counts them).
For the smoke scripts (.ci/vm-smoke, .ci/local-smoke).

usage: trace_complete.py [--at-least] LAB_JSON TRACE_JSON
  LAB_JSON    the lab's /etc/tracing-lab/lab.json, or the same description
  --at-least  more spans than the chain emits are fine too
Prints what the trace has and exits 0 when complete, 1 when not, 2 on bad input.
"""

import argparse
import json
import sys

from support import checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at-least", action="store_true", help="more spans than the chain emits are fine too")
    parser.add_argument("lab_json")
    parser.add_argument("trace_json")
    args = parser.parse_args()
    try:
        with open(args.lab_json) as f:
            hops: list[checks.Hop] = json.load(f)["hops"]
        with open(args.trace_json) as f:
            spans = checks.spans_of(json.load(f))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"trace_complete: cannot read {args.lab_json} and {args.trace_json}: {error!r}", file=sys.stderr)
        return 2
    expected_services = sorted(hop["serviceName"] for hop in hops)
    expected = checks.expected_span_count(hops)
    services = sorted({str(s["service"]) for s in spans})
    print(f"{len(spans)} spans from {services} (the chain emits {expected} from {expected_services})")
    count_ok = len(spans) >= expected if args.at_least else len(spans) == expected
    return 0 if services == expected_services and count_ok else 1


if __name__ == "__main__":
    sys.exit(main())
