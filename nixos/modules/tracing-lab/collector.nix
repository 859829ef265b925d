{
  config,
  lib,
  pkgs,
  ...
}:
let
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;
  cfg = config.services.tracing-lab;
  # The exercise's part: tail sampling, a processor of the contrib distribution.
  tailSampling = backends.exerciseTailSampling exercises.byName.${cfg.exercise};
in
{
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    services.opentelemetry-collector = {
      enable = true;
      package = lib.mkIf (tailSampling != null) pkgs.${backends.collectorPackage tailSampling};
      settings = backends.collectorSettings {
        inherit (cfg) ports;
        inherit tailSampling;
      };
      # `otelcol validate` checks the generated file when the system is built
      # (the default only in nixpkgs after 26.05).
      validateConfigFile = true;
    };
  };
}
