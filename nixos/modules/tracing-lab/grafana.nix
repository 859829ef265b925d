{
  config,
  lib,
  pkgs,
  ...
}:
let
  backends = import ../../lib/backends.nix;

  cfg = config.services.tracing-lab;
  grafana = config.services.grafana;
  secretKeyFile = "${grafana.dataDir}/secret_key";

  plugins = backends.grafanaPluginChoice {
    grafanaVersion = grafana.package.version;
    packaged = name: pkgs.grafanaPlugins ? ${name};
  };
  installed = map (name: pkgs.grafanaPlugins.${name}) plugins.install;
  provisioning = backends.grafanaProvisioning {
    inherit (cfg) ports;
    dashboardsPath = ./dashboards;
  };
in
{
  config = lib.mkIf (cfg.enable && cfg.runsBackends) {
    # Instead of an attribute error, say which plugin is missing.
    assertions = map (message: {
      assertion = false;
      message = "services.tracing-lab: ${message}";
    }) plugins.missing;

    services.grafana = {
      enable = true;
      # Setting this also turns off Grafana's downloads at start, so it lists
      # every plugin the lab needs.
      declarativePlugins = lib.mkIf (installed != [ ]) installed;

      settings = backends.grafanaSettings {
        inherit (cfg) ports listenAddress;
        anonymousRole = cfg.grafanaAnonymousRole;
        # Read from a file that the unit generates on first boot (below), so
        # the key never lands in the world-readable Nix store.
        secretKey = "$__file{${secretKeyFile}}";
      };

      provision = {
        enable = true;

        datasources.settings = provisioning.datasources;
        dashboards.settings = provisioning.dashboards;
      };
    };

    systemd.services.grafana.preStart = lib.mkBefore ''
      if [ ! -s ${secretKeyFile} ]; then
        (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > ${secretKeyFile})
      fi
    '';
  };
}
