{
  config,
  lib,
  pkgs,
  ...
}:
let
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;
  tiers = import ../../lib/collector-tiers.nix;
  cfg = config.services.tracing-lab;
  # The exercise's part: tail sampling, a processor of the contrib distribution.
  exercise = exercises.byName.${cfg.exercise};
  tailSampling = backends.exerciseTailSampling exercise;
in
{
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    services.opentelemetry-collector = {
      enable = true;
      package = lib.mkIf (tailSampling != null) pkgs.${backends.collectorPackage tailSampling};
      # With tail sampling scaled out, the first tier (./collector-tiers.nix).
      settings = tiers.receiverSettings {
        inherit (cfg) ports;
        inherit tailSampling;
        # Component names follow the collector that runs them.
        collectorVersion = config.services.opentelemetry-collector.package.version;
        inherit (cfg.collector.tailSampling) replicas;
        routingKey = tiers.exerciseRoutingKey exercise;
      };
      # `otelcol validate` checks the generated file when the system is built
      # (the default only in nixpkgs after 26.05).
      validateConfigFile = true;
    };
  };
}
