# The lab spread over four machines, in the style of nixpkgs' multi-node
# tests: a machine per hop of the `network` exercise (hop1, hop2, hop3) and
# `backends` with the collector, Tempo, Prometheus and Grafana. Every machine
# imports the module with the same chain and hosts and says which it is
# (docs/multi-host.md). The script is ./lab_checks.py (the span and metric
# checks the one-machine test uses too) followed by ./lab-multi-host.py.
#
# To look around: nix build .#checks.x86_64-linux.lab-multi-host.driverInteractive
# and ./result/bin/nixos-test-driver (or nix run .#lab-multi-host).
{ pkgs }:
let
  inherit (pkgs) lib;
  machines = [
    "backends"
    "hop1"
    "hop2"
    "hop3"
  ];

  labMachine =
    hostName:
    { nodes, ... }:
    {
      imports = [ ../modules/tracing-lab ];

      services.tracing-lab = {
        enable = true;
        exercise = "network";
        inherit hostName;
        backendsHost = "backends";
        # The test network's interface; eth0 is the driver's own link.
        interface = "eth1";
        hosts = lib.genAttrs machines (name: {
          address = nodes.${name}.networking.primaryIPAddress;
        });
        grafanaAnonymousRole = "Admin";
      };

      virtualisation = lib.mkIf (hostName == "backends") {
        cores = 2;
        memorySize = 3072;
        diskSize = 4096;
      };

      environment.systemPackages = [ pkgs.curl ];
    };
in
pkgs.testers.runNixOSTest {
  name = "tracing-lab-multi-host";

  nodes = lib.genAttrs machines labMachine;

  # Interactive runs also reach the backends' UIs from the host.
  interactive.nodes.backends.imports = [ ../forward-ports.nix ];

  testScript = builtins.readFile ./lab_checks.py + builtins.readFile ./lab-multi-host.py;
}
