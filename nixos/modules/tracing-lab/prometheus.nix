{ config, lib, ... }:
let
  backends = import ../../lib/backends.nix;
  cfg = config.services.tracing-lab;
in
{
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    services.prometheus = {
      enable = true;
      inherit (cfg) listenAddress;
      port = cfg.ports.prometheus;
      extraFlags = backends.prometheusFlags;
      # The collector's own metrics, for the dashboard's pipeline row.
      scrapeConfigs = backends.prometheusScrapeConfigs;
    };
  };
}
