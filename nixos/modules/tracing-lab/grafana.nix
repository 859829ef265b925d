{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (import ../../lib/topology.nix) tempoDatasourceUid prometheusDatasourceUid;

  cfg = config.services.tracing-lab;
  grafana = config.services.grafana;
  secretKeyFile = "${grafana.dataDir}/secret_key";

  # From 13.2 Grafana serves these data sources from external plugins, which
  # it would try to download at start; the lab must work offline.
  externalPlugins = lib.optionals (lib.versionAtLeast grafana.package.version "13.2") [
    pkgs.grafanaPlugins.tempo
    pkgs.grafanaPlugins.prometheus
  ];

  # Provisioning files expand ${...} themselves, so PromQL's $__tags is written $$__tags.
  calls = "traces_spanmetrics_calls_total{$$__tags}";
  latencyBuckets = "traces_spanmetrics_latency_bucket{$$__tags}";
in
{
  config = lib.mkIf cfg.enable {
    services.grafana = {
      enable = true;
      declarativePlugins = lib.mkIf (externalPlugins != [ ]) externalPlugins;

      settings = {
        server = {
          http_addr = cfg.listenAddress;
          http_port = cfg.ports.grafana;
        };
        # Read from a file that the unit generates on first boot (below), so
        # the key never lands in the world-readable Nix store.
        security.secret_key = "$__file{${secretKeyFile}}";
        "auth.anonymous" = {
          enabled = true;
          org_role = "Admin";
        };
        analytics = {
          reporting_enabled = false;
          check_for_updates = false;
          check_for_plugin_updates = false;
        };
        # No plugin downloads at start.
        plugins.preinstall_disabled = true;
      };

      provision = {
        enable = true;

        datasources.settings = {
          apiVersion = 1;
          prune = true;
          datasources = [
            {
              name = "Prometheus";
              type = "prometheus";
              uid = prometheusDatasourceUid;
              url = "http://127.0.0.1:${toString cfg.ports.prometheus}";
              jsonData = {
                httpMethod = "POST";
                exemplarTraceIdDestinations = [
                  {
                    name = "traceID";
                    datasourceUid = tempoDatasourceUid;
                  }
                ];
              };
            }
            {
              name = "Tempo";
              type = "tempo";
              uid = tempoDatasourceUid;
              url = "http://127.0.0.1:${toString cfg.ports.tempo}";
              isDefault = true;
              jsonData = {
                serviceMap.datasourceUid = prometheusDatasourceUid;
                nodeGraph.enabled = true;
                search.hide = false;
                tracesToMetrics = {
                  datasourceUid = prometheusDatasourceUid;
                  spanStartTimeShift = "-5m";
                  spanEndTimeShift = "5m";
                  tags = [
                    {
                      key = "service.name";
                      value = "service";
                    }
                  ];
                  queries = [
                    {
                      name = "Request rate";
                      query = "sum(rate(${calls}[1m]))";
                    }
                    {
                      name = "Latency p95";
                      query = "histogram_quantile(0.95, sum by (le) (rate(${latencyBuckets}[1m])))";
                    }
                  ];
                };
              };
            }
          ];
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
