{ config, lib, ... }:
let
  backends = import ../../lib/backends.nix;
  cfg = config.services.tracing-lab;
  settings = backends.lokiSettings {
    inherit (cfg) ports;
    # services.loki runs in its dataDir, owned by its user.
    stateDir = config.services.loki.dataDir;
  };
in
{
  # Beside the collector, on the machine that runs the backends (./hosts.nix).
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    # A key outside what both Loki lines accept would fail only at build time
    # (`loki -verify-config`) or with another Loki version: say it here.
    assertions = map (key: {
      assertion = false;
      message = "services.tracing-lab: Loki setting `${key}` is not known to be accepted by both Loki 3.4 and 3.6-3.7 (nixos/lib/backends.nix lokiKeys)";
    }) (backends.lokiUnknownKeys config.services.loki.configuration);

    services.loki = {
      enable = true;
      configuration = settings;
    };

    # The hops' log lines reach Loki through the collector.
    systemd.services.opentelemetry-collector = {
      wants = [ "loki.service" ];
      after = [ "loki.service" ];
    };
  };
}
