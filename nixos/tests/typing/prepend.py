# Declarations of the NixOS test driver's globals that the lab's VM test
# script uses, so that .ci/nix-checks can type-check it without Nix: it puts
# this file, then `machine: Machine;` (the driver's own line for the node),
# in front of the script, as nixos/lib/testing/driver.nix does with its prelude.
#
# Signatures as in nixpkgs' test driver, Driver.test_symbols() in
# test_driver/driver.py and retry() in test_driver/machine: the same in the
# driver generation with `Machine` and in the newer one with
# `BaseMachine`/`QemuMachine`, except retry()'s timeout (`timeout`, later
# `timeout_seconds`), which the stub therefore takes positionally only.
from collections.abc import Callable
from contextlib import AbstractContextManager

from test_driver.machine import Machine, retry

start_all: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
