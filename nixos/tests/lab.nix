# The lab end to end in one VM: the default chain, collector, Tempo,
# Prometheus and Grafana. The script is ./lab_checks.py (the assertions the
# runtime test shares) followed by ./lab.py, kept as files so that CI can lint
# and type-check them without Nix (.ci/nix-checks) and run the shared part
# against real backends (tests/runtime/nixos_lab.py).
{ pkgs }:

pkgs.testers.runNixOSTest {
  name = "tracing-lab";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ ../modules/tracing-lab ];

      services.tracing-lab = {
        enable = true;
        # As in the `nix run` VM; the script reads Grafana's data sources through its API.
        grafanaAnonymousRole = "Admin";
        # The exercises whose signatures the script checks.
        specialisations = {
          enable = true;
          exercises = [
            "broken-propagation"
            "errors"
            "tail-sampling"
            "tail-sampling-scaled"
            "tail-sampling-scaled-by-service"
          ];
        };
      };

      virtualisation = {
        cores = 2;
        memorySize = 3072;
        diskSize = 4096;
      };

      environment.systemPackages = [ pkgs.curl ];
    };

  # Interactive runs (`nix run .#test-interactive`) also reach the UIs from the host.
  interactive.nodes.machine.imports = [ ../forward-ports.nix ];

  testScript = builtins.readFile ./lab_checks.py + builtins.readFile ./lab.py;
}
