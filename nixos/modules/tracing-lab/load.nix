# A steady trickle of requests to the entry hop, so that Grafana's service
# graph, span metrics and dashboard have data the moment a learner opens them.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  cfg = config.services.tracing-lab;
  entry = lib.head cfg.chain;
  backends = import ../../lib/backends.nix;
  inherit (import ../../lib/topology.nix) serviceName;
  targets = pkgs.writeText "tracing-lab-load-targets" (backends.loadTargets entry.port);
in
{
  options.services.tracing-lab.load = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = "Whether the lab sends requests to its entry hop on its own.";
    };

    rate = mkOption {
      type = types.ints.positive;
      default = backends.loadRate;
      description = "Requests per second the lab sends to its entry hop.";
    };
  };

  config = lib.mkIf (cfg.enable && cfg.load.enable && cfg.chain != [ ]) {
    systemd.services.tracing-lab-load = {
      description = "Steady requests to the tracing lab's entry hop";
      wantedBy = [ "multi-user.target" ];
      wants = [ "${serviceName entry.name}.service" ];
      after = [ "${serviceName entry.name}.service" ];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (
          [ (lib.getExe pkgs.vegeta) ]
          ++ backends.loadAttackArgs {
            inherit (cfg.load) rate;
            targetsFile = targets;
          }
        );
        Restart = "always";
        RestartSec = 5;
        DynamicUser = true;
      }
      // import ../../lib/hardening.nix;
    };
  };
}
