# checks.<system>.eval-versions: both sides of each version branch of the
# modules, whatever versions this nixpkgs ships. Overlays set Tempo to 2.10.x
# (nixos-26.05) or 3.x, Grafana to 13.0.x or 13.2.x (where the Tempo and
# Prometheus data sources became plugins), and the OpenTelemetry Collector to
# 0.151 (nixos-26.05), 0.156 or 0.143 (before the OTLP exporters' rename), and
# the evaluated configurations must hold what each side needs: every
# collector configuration the lab generates names only components that its
# collector's version knows. Evaluation only: the overridden packages
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
      collector ? null,
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
            (
              _: prev:
              {
                tempo = if tempo == null then prev.tempo else setVersion prev.tempo tempo;
                grafana = if grafana == null then prev.grafana else setVersion prev.grafana grafana;
                grafanaPlugins = grafanaPlugins prev;
              }
              // withCollector collector prev
            )
          ];
        }
      ];
    };

  # Both collector distributions at `version` (null: as this nixpkgs has them).
  withCollector =
    version: prev:
    lib.optionalAttrs (version != null) {
      opentelemetry-collector = setVersion prev.opentelemetry-collector version;
      opentelemetry-collector-contrib = setVersion prev.opentelemetry-collector-contrib version;
    };

  # As nixos-26.05 most likely ships them, and as newer nixpkgs do.
  older = evaluate {
    tempo = "2.10.8";
    grafana = "13.0.3";
    collector = "0.151.0";
  };
  newer = evaluate {
    tempo = "3.0.2";
    grafana = "13.2.2";
    collector = "0.156.0";
  };
  # A collector from before the OTLP exporters' rename (nixpkgs shipped 0.124
  # until May 2026).
  beforeRename = evaluate { collector = "0.143.0"; };

  # The component types each collector line knows, of those the lab may use
  # (core, and contrib for tail sampling and the like). 0.144 renamed the OTLP
  # exporters, keeping the old names as deprecated aliases; 0.156 has the
  # underscore names of the contrib exporters too (as its `components` lists).
  collectorKnows =
    version:
    let
      from = floor: names: lib.optionals (lib.versionAtLeast version floor) names;
    in
    {
      receivers = [ "otlp" ];
      processors = [
        "batch"
        "memory_limiter"
        "tail_sampling"
        "probabilistic_sampler"
        "attributes"
        "resource"
        "filter"
        "span"
      ];
      exporters = [
        "debug"
        "otlp"
        "otlphttp"
        "prometheus"
        "prometheusremotewrite"
        "loadbalancing"
        "file"
      ]
      ++ from "0.144" [
        "otlp_grpc"
        "otlp_http"
      ]
      ++ from "0.156" [
        "prometheus_remote_write"
        "load_balancing"
      ];
      extensions = [
        "health_check"
        "zpages"
        "pprof"
      ];
      # service.telemetry.metrics: `address` gave way to `readers` in 0.111.
      telemetryMetrics = [
        "level"
        "readers"
        "views"
      ];
    };

  # What in one collector configuration its collector (at `version`) would
  # reject, as messages naming the place: every component defined or named
  # in a pipeline, by its type (the part of the id before any "/").
  unknownComponents =
    where: version: settings:
    let
      knows = collectorKnows version;
      typeOf = id: lib.head (lib.splitString "/" id);
      check =
        kind: place: ids:
        map (id: "${where}: collector ${version} has no ${kind} type `${typeOf id}` (${place} ${id})") (
          lib.filter (id: !(lib.elem (typeOf id) knows.${kind})) ids
        );
      kinds = [
        "receivers"
        "processors"
        "exporters"
        "extensions"
      ];
      pipelines = settings.service.pipelines or { };
    in
    lib.concatMap (kind: check kind kind (lib.attrNames (settings.${kind} or { }))) kinds
    ++ lib.concatLists (
      lib.mapAttrsToList (
        name: pipeline:
        lib.concatMap (kind: check kind "service.pipelines.${name}.${kind}" (pipeline.${kind} or [ ])) (
          lib.filter (kind: kind != "extensions") kinds
        )
      ) pipelines
    )
    ++ check "extensions" "service.extensions" (settings.service.extensions or [ ])
    ++ map (key: "${where}: collector ${version} has no service.telemetry.metrics.${key}") (
      lib.filter (key: !(lib.elem key knows.telemetryMetrics)) (
        lib.attrNames (settings.service.telemetry.metrics or { })
      )
    );

  # Every collector configuration the lab generates at a collector version:
  # the VM's, and each exercise's (the VM's specialisations and `nix run
  # .#local` take them from the same function, nixos/lib/local.nix).
  collectorConfigs =
    system:
    let
      version = system.pkgs.opentelemetry-collector.version;
      local = import ../../lib/local.nix;
      localPackage = system.pkgs.callPackage ../../../nix/local.nix { pkgs = system.pkgs; };
    in
    {
      inherit version;
      configs = {
        vm = system.config.services.opentelemetry-collector.settings;
      }
      // lib.mapAttrs' (exercise: settings: lib.nameValuePair "local:${exercise}" settings) (
        localPackage.passthru.settings.collector
      )
      // lib.genAttrs (import ../../lib/exercises.nix).names (
        exercise:
        local.collectorSettings {
          inherit exercise;
          collectorVersion = system.pkgs.${local.collectorPackage exercise}.version;
        }
      );
    };
  collectorErrors =
    system:
    let
      generated = collectorConfigs system;
    in
    lib.concatLists (
      lib.mapAttrsToList (where: unknownComponents where generated.version) generated.configs
    );
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
    "the collector overlays set the versions the modules see" = {
      actual = map (system: (collectorConfigs system).version) [
        older
        newer
        beforeRename
      ];
      expected = [
        "0.151.0"
        "0.156.0"
        "0.143.0"
      ];
    };
    "collector 0.151 (nixos-26.05), 0.156 and 0.143: every generated configuration names only what it knows" =
      {
        actual = lib.concatMap collectorErrors [
          older
          newer
          beforeRename
        ];
        expected = [ ];
      };
    "collector: the exporter to Tempo by the name each version knows" = {
      actual =
        map
          (system: system.config.services.opentelemetry-collector.settings.service.pipelines.traces.exporters)
          [
            older
            newer
            beforeRename
          ];
      expected = [
        [ "otlp_grpc" ]
        [ "otlp_grpc" ]
        [ "otlp" ]
      ];
    };
    "collector: a name one version would reject is caught" = {
      actual =
        unknownComponents "0.156's settings" "0.143.0"
          newer.config.services.opentelemetry-collector.settings;
      expected = [
        "0.156's settings: collector 0.143.0 has no exporters type `otlp_grpc` (exporters otlp_grpc)"
        "0.156's settings: collector 0.143.0 has no exporters type `otlp_http` (exporters otlp_http/loki)"
        "0.156's settings: collector 0.143.0 has no exporters type `prometheus_remote_write` (exporters prometheus_remote_write/prometheus)"
        "0.156's settings: collector 0.143.0 has no exporters type `otlp_http` (service.pipelines.logs.exporters otlp_http/loki)"
        "0.156's settings: collector 0.143.0 has no exporters type `prometheus_remote_write` (service.pipelines.metrics.exporters prometheus_remote_write/prometheus)"
        "0.156's settings: collector 0.143.0 has no exporters type `otlp_grpc` (service.pipelines.traces.exporters otlp_grpc)"
      ];
    };
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
