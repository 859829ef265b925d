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

  plugins = backends.grafanaPlugins grafana.package.version;
  packaged = name: pkgs.grafanaPlugins ? ${name};
  missing = lib.filter (name: !packaged name) plugins.required;
  installedNames = lib.filter packaged (plugins.required ++ plugins.wanted);
  installed = map (name: pkgs.grafanaPlugins.${name}) installedNames;
in
{
  config = lib.mkIf cfg.enable {
    # Instead of an attribute error, say which plugin is missing.
    assertions = map (name: {
      assertion = false;
      message = "services.tracing-lab: Grafana ${grafana.package.version} needs pkgs.grafanaPlugins.${name}, which this nixpkgs lacks; the lab runs offline, so Grafana cannot download it. Use a nixpkgs that packages it, or add it with an overlay.";
    }) missing;

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

        datasources.settings = {
          apiVersion = 1;
          prune = true;
          datasources = backends.grafanaDatasources { inherit (cfg) ports; };
        };

        dashboards.settings = {
          apiVersion = 1;
          providers = [
            {
              name = "tracing-lab";
              folder = "Tracing lab";
              options.path = ./dashboards;
            }
          ];
        };
      };
    };

    systemd.services.grafana.preStart = lib.mkBefore ''
      if [ ! -s ${secretKeyFile} ]; then
        (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > ${secretKeyFile})
      fi
    '';
  };
}
