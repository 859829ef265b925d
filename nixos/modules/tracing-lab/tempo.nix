{
  config,
  lib,
  pkgs,
  ...
}:
let
  backends = import ../../lib/backends.nix;
  cfg = config.services.tracing-lab;
  # services.tempo runs pkgs.tempo with DynamicUser and StateDirectory=tempo.
  stateDir = "/var/lib/tempo";
  writesVarTempo = backends.tempoWritesVarTempo pkgs.tempo.version;
in
{
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    services.tempo = {
      enable = true;
      settings = backends.tempoSettings {
        inherit (cfg) ports listenAddress;
        inherit stateDir;
      };
    };

    # Tempo 3 writes under /var/tempo, but the service may only write its
    # state directory. Mapping the whole default tree there also covers
    # defaults not found in the 3.x sources that were read.
    systemd.services.tempo.serviceConfig.BindPaths = lib.mkIf writesVarTempo [
      "${stateDir}:/var/tempo"
    ];
  };
}
