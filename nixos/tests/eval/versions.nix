# checks.<system>.eval-versions: both sides of each version branch of the
# modules, whatever versions this nixpkgs ships. Overlays set Tempo to 2.10.x
# (nixos-26.05) or 3.x, and Grafana to 13.0.x or 13.2.x (where the Tempo and
# Prometheus data sources became plugins), and the evaluated configurations
# must hold what each side needs. Evaluation only: the overridden packages
# are never built, and the check's derivation does not depend on them.
{ pkgs, nixosSystem }:
let
  inherit (pkgs) lib;

  labPlugins = [
    "tempo"
    "prometheus"
    "grafana-exploretraces-app"
    "grafana-metricsdrilldown-app"
  ];
  # Grafana plugins this nixpkgs may lack; only their names matter here.
  standIn =
    prev: pname:
    prev.grafanaPlugins.grafanaPlugin {
      inherit pname;
      version = "0";
      zipHash = lib.fakeHash;
    };
  withPlugins = prev: prev.grafanaPlugins // lib.genAttrs labPlugins (standIn prev);
  withoutPlugins = prev: removeAttrs prev.grafanaPlugins labPlugins;

  setVersion =
    package: version:
    package.overrideAttrs {
      inherit version;
      __intentionallyOverridingVersion = true;
    };

  evaluate =
    {
      tempo ? null,
      grafana ? null,
      grafanaPlugins ? withPlugins,
    }:
    nixosSystem {
      modules = [
        ../../vm.nix
        {
          # The backends are the question here; each exercise would be a
          # whole system more to evaluate.
          services.tracing-lab.specialisations.enable = lib.mkForce false;
          nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
          nixpkgs.overlays = [
            (_: prev: {
              tempo = if tempo == null then prev.tempo else setVersion prev.tempo tempo;
              grafana = if grafana == null then prev.grafana else setVersion prev.grafana grafana;
              grafanaPlugins = grafanaPlugins prev;
            })
          ];
        }
      ];
    };

  # As nixos-26.05 most likely ships them, and as newer nixpkgs do.
  older = evaluate {
    tempo = "2.10.8";
    grafana = "13.0.3";
  };
  newer = evaluate {
    tempo = "3.0.2";
    grafana = "13.2.2";
  };
  newerWithoutPlugins = evaluate {
    grafana = "13.2.2";
    grafanaPlugins = withoutPlugins;
  };
  olderWithoutPlugins = evaluate {
    grafana = "13.0.3";
    grafanaPlugins = withoutPlugins;
  };

  failedAssertions =
    system: map (a: a.message) (lib.filter (a: !a.assertion) system.config.assertions);
  pluginNames =
    system:
    let
      plugins = system.config.services.grafana.declarativePlugins;
    in
    if plugins == null then null else map (plugin: plugin.pname) plugins;
  tempoUnit =
    system:
    let
      serviceConfig = system.config.systemd.services.tempo.serviceConfig;
    in
    {
      runsTheOverlaidTempo = lib.hasPrefix "${system.pkgs.tempo}/bin/tempo " serviceConfig.ExecStart;
      bindPaths = serviceConfig.BindPaths or [ ];
    };
  noDownloads =
    system:
    let
      settings = system.config.services.grafana.settings;
    in
    {
      preinstallDisabled = settings.plugins.preinstall_disabled;
      checksForPluginUpdates = settings.analytics.check_for_plugin_updates;
      pluginsFromTheStore = lib.hasSuffix "-grafana-plugins" (toString settings.paths.plugins);
    };
  missingPlugin =
    name:
    "services.tracing-lab: Grafana 13.2.2 needs pkgs.grafanaPlugins.${name}, which this nixpkgs lacks; the lab runs offline, so Grafana cannot download it. Use a nixpkgs that packages it, or add it with an overlay.";

  cases = {
    "the overlays set the versions the modules see" = {
      actual =
        map
          (system: [
            system.pkgs.tempo.version
            system.config.services.grafana.package.version
          ])
          [
            older
            newer
          ];
      expected = [
        [
          "2.10.8"
          "13.0.3"
        ]
        [
          "3.0.2"
          "13.2.2"
        ]
      ];
    };
    "both sides evaluate to a whole system" = {
      actual = map (system: builtins.isString system.config.system.build.toplevel.drvPath) [
        older
        newer
      ];
      expected = [
        true
        true
      ];
    };

    "Tempo 2.10 and 3 get the same settings, which both accept" = {
      actual = newer.config.services.tempo.settings;
      expected = older.config.services.tempo.settings;
    };
    "Tempo: only blocks that both 2.10 and 3 accept (Tempo rejects unknown keys)" = {
      actual = builtins.attrNames older.config.services.tempo.settings;
      expected = [
        "distributor"
        "metrics_generator"
        "overrides"
        "server"
        "storage"
        "stream_over_http_enabled"
        "usage_report"
      ];
    };
    "Tempo 2.10: the unit binds nothing over /var/tempo" = {
      actual = tempoUnit older;
      expected = {
        runsTheOverlaidTempo = true;
        bindPaths = [ ];
      };
    };
    "Tempo 3: /var/tempo is the state directory" = {
      actual = tempoUnit newer;
      expected = {
        runsTheOverlaidTempo = true;
        bindPaths = [ "/var/lib/tempo:/var/tempo" ];
      };
    };

    "Grafana 13.0: the Drilldown apps; Tempo and Prometheus are built in" = {
      actual = pluginNames older;
      expected = [
        "grafana-exploretraces-app"
        "grafana-metricsdrilldown-app"
      ];
    };
    "Grafana 13.2: every plugin the lab needs, data sources first" = {
      actual = pluginNames newer;
      expected = [
        "tempo"
        "prometheus"
        "grafana-exploretraces-app"
        "grafana-metricsdrilldown-app"
      ];
    };
    "Grafana, both sides: plugins from the store, no downloads" = {
      actual = map noDownloads [
        older
        newer
      ];
      expected = lib.replicate 2 {
        preinstallDisabled = true;
        checksForPluginUpdates = false;
        pluginsFromTheStore = true;
      };
    };
    "Grafana 13.2 without the data source plugins: an assertion names each" = {
      actual = failedAssertions newerWithoutPlugins;
      expected = [
        (missingPlugin "tempo")
        (missingPlugin "prometheus")
      ];
    };
    "Grafana 13.2 without the data source plugins: the rest still evaluates" = {
      actual = pluginNames newerWithoutPlugins;
      expected = null;
    };
    "Grafana 13.0 without the apps packaged: no plugin list, nothing asserted" = {
      actual = {
        plugins = pluginNames olderWithoutPlugins;
        failed = failedAssertions olderWithoutPlugins;
      };
      expected = {
        plugins = null;
        failed = [ ];
      };
    };
  };
in
assert import ./expect.nix "eval-versions" cases;
pkgs.writeText "eval-versions" "Every case of nixos/tests/eval/versions.nix held when this check was evaluated.\n"
