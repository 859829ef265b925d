{ config, lib, ... }:
let
  backends = import ../../lib/backends.nix;
  cfg = config.services.tracing-lab;
in
{
  config = lib.mkIf cfg.enable {
    services.opentelemetry-collector = {
      enable = true;
      settings = backends.collectorSettings { inherit (cfg) ports; };
      # `otelcol validate` checks the generated file when the system is built
      # (the default only in nixpkgs after 26.05).
      validateConfigFile = true;
    };
  };
}
