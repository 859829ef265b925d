# Eval tests of nixos/lib/backends.nix, no nixpkgs needed:
#   nix-instantiate --eval --strict nixos/tests/eval/pure-backends.nix
# Evaluates to true, or throws naming every failing case.
let
  topology = import ../../lib/topology.nix;
  backends = import ../../lib/backends.nix;

  ports = topology.defaultPorts;
  moved = ports // {
    tempo = 13200;
    tempoGrpc = 19095;
    tempoOtlpGrpc = 14417;
    prometheus = 19090;
    collectorOtlpGrpc = 14317;
    collectorOtlpHttp = 14318;
    loki = 13100;
    lokiGrpc = 19097;
  };

  collector = backends.collectorSettings {
    ports = moved;
    collectorVersion = "0.156.0";
  };
  # nixpkgs' collector before 0.144 knows the exporter by its old name only.
  oldCollector = backends.collectorSettings {
    ports = moved;
    collectorVersion = "0.124.0";
  };
  tempo = backends.tempoSettings {
    ports = moved;
    listenAddress = "0.0.0.0";
    stateDir = "/state";
  };
  loki = backends.lokiSettings {
    ports = moved;
    stateDir = "/state";
  };
  datasources = backends.grafanaDatasources { ports = moved; };
  datasource = type: builtins.head (builtins.filter (ds: ds.type == type) datasources);
  tempoJson = (datasource "tempo").jsonData;
  exemplarDestinations = (datasource "prometheus").jsonData.exemplarTraceIdDestinations;

  cases = {
    "the collector receives where the hops send" = {
      actual = collector.receivers.otlp.protocols;
      expected = {
        grpc.endpoint = "127.0.0.1:14317";
        http.endpoint = "127.0.0.1:14318";
      };
    };
    "the collector exports to Tempo's OTLP/gRPC receiver, by the name its version knows" = {
      actual = [
        collector.exporters.otlp_grpc.endpoint
        collector.service.pipelines.traces.exporters
        oldCollector.exporters.otlp.endpoint
        oldCollector.service.pipelines.traces.exporters
      ];
      expected = [
        "127.0.0.1:14417"
        [ "otlp_grpc" ]
        "127.0.0.1:14417"
        [ "otlp" ]
      ];
    };
    "the OTLP exporter is otlp_grpc from 0.144 on" = {
      actual = map backends.collectorOtlpExporter [
        "0.124.0"
        "0.143.1"
        "0.144.0"
        "0.151.0"
        "0.156.0"
        "1.0.0"
      ];
      expected = [
        "otlp"
        "otlp"
        "otlp_grpc"
        "otlp_grpc"
        "otlp_grpc"
        "otlp_grpc"
      ];
    };
    "the exporter's queue and retries are explicit, and the queue outlasts no retry" = {
      actual = {
        queue = collector.exporters.otlp_grpc.sending_queue;
        retry = collector.exporters.otlp_grpc.retry_on_failure;
      };
      expected = {
        queue = {
          enabled = true;
          num_consumers = 4;
          queue_size = 600;
        };
        retry = {
          enabled = true;
          initial_interval = "1s";
          max_interval = "10s";
          max_elapsed_time = "10m";
        };
      };
    };
    "the collector's own metrics are on loopback at the port the topology reserves, and scraped there" =
      {
        actual = {
          pull = map (reader: reader.pull.exporter.prometheus) collector.service.telemetry.metrics.readers;
          scraped = map (job: job.static_configs) backends.prometheusScrapeConfigs;
        };
        expected = {
          pull = [
            {
              host = "127.0.0.1";
              port = topology.fixedPorts.collectorTelemetry;
              # The names the dashboard queries, without _total or units, on every version.
              without_type_suffix = true;
              without_units = true;
            }
          ];
          scraped = [ [ { targets = [ "127.0.0.1:${toString topology.fixedPorts.collectorTelemetry}" ]; } ] ];
        };
      };
    "Tempo: only the HTTP API listens on listenAddress" = {
      actual = tempo.server;
      expected = {
        http_listen_address = "0.0.0.0";
        http_listen_port = 13200;
        grpc_listen_address = "127.0.0.1";
        grpc_listen_port = 19095;
      };
    };
    "Tempo's generator writes to Prometheus' remote-write receiver" = {
      actual = map (target: target.url) tempo.metrics_generator.storage.remote_write;
      expected = [ "http://127.0.0.1:19090/api/v1/write" ];
    };
    "Tempo keeps its state under stateDir" = {
      actual = [
        tempo.storage.trace.wal.path
        tempo.storage.trace.local.path
        tempo.metrics_generator.storage.path
      ];
      expected = [
        "/state/wal"
        "/state/blocks"
        "/state/generator/wal"
      ];
    };
    "Tempo settings use only blocks that both 2.10 and 3.x accept" = {
      actual = builtins.attrNames tempo;
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
    "Tempo 2.10 does not write /var/tempo" = {
      actual = backends.tempoWritesVarTempo "2.10.8";
      expected = false;
    };
    "Tempo 3 writes /var/tempo" = {
      actual = map backends.tempoWritesVarTempo [
        "3.0.0-rc.1"
        "3.0.2"
        "3.1.0"
      ];
      expected = [
        true
        true
        true
      ];
    };
    "Prometheus accepts remote writes" = {
      actual = builtins.elem "--web.enable-remote-write-receiver" backends.prometheusFlags;
      expected = true;
    };

    "Grafana before 13.2 has the data sources built in" = {
      actual = map (version: (backends.grafanaPlugins version).required) [
        "12.3.1"
        "13.0.3"
        "13.1.9"
      ];
      expected = [
        [ ]
        [ ]
        [ ]
      ];
    };
    "Grafana 13.2 and later need the Tempo and Prometheus plugins" = {
      actual = map (version: (backends.grafanaPlugins version).required) [
        "13.2.0"
        "13.2.2"
        "13.10.0"
        "14.0.0"
      ];
      expected = [
        [
          "tempo"
          "prometheus"
        ]
        [
          "tempo"
          "prometheus"
        ]
        [
          "tempo"
          "prometheus"
        ]
        [
          "tempo"
          "prometheus"
        ]
      ];
    };
    "the Drilldown apps for traces and metrics are wanted on every version" = {
      actual = (backends.grafanaPlugins "13.0.3").wanted;
      expected = [
        "grafana-exploretraces-app"
        "grafana-metricsdrilldown-app"
      ];
    };
    "Grafana's data sources point at Tempo and Prometheus" = {
      actual = map (ds: { inherit (ds) uid url; }) datasources;
      expected = [
        {
          uid = topology.prometheusDatasourceUid;
          url = "http://127.0.0.1:19090";
        }
        {
          uid = topology.tempoDatasourceUid;
          url = "http://127.0.0.1:13200";
        }
        {
          uid = topology.lokiDatasourceUid;
          url = "http://127.0.0.1:13100";
        }
      ];
    };
    "a span links to its hop's log lines of its trace, by structured metadata" = {
      actual = {
        inherit (tempoJson.tracesToLogsV2) datasourceUid tags query;
      };
      expected = {
        datasourceUid = topology.lokiDatasourceUid;
        tags = [
          {
            key = "service.name";
            value = "service_name";
          }
        ];
        # $$ is a literal $ in a provisioning file.
        query = "{$${__tags}} | trace_id=\"$${__span.traceId}\"";
      };
    };
    "a log line's trace_id links to the Tempo data source" = {
      actual = map (field: {
        inherit (field) matcherType matcherRegex datasourceUid;
      }) (datasource "loki").jsonData.derivedFields;
      expected = [
        {
          matcherType = "label";
          matcherRegex = "trace_id";
          datasourceUid = topology.tempoDatasourceUid;
        }
      ];
    };
    "the collector sends logs to Loki's OTLP endpoint, metrics to remote write" = {
      actual = {
        logs = map (e: collector.exporters.${e}.endpoint) collector.service.pipelines.logs.exporters;
        metrics = map (e: collector.exporters.${e}.endpoint) collector.service.pipelines.metrics.exporters;
        traces = collector.service.pipelines.traces.exporters;
      };
      expected = {
        logs = [ "http://127.0.0.1:13100/otlp" ];
        metrics = [ "http://127.0.0.1:19090/api/v1/write" ];
        traces = [ "otlp_grpc" ];
      };
    };
    "Loki listens on loopback by default, gRPC always" = {
      actual = loki.server;
      expected = {
        http_listen_address = "127.0.0.1";
        http_listen_port = 13100;
        grpc_listen_address = "127.0.0.1";
        grpc_listen_port = 19097;
        log_level = "warn";
      };
    };
    "Loki keeps its state under stateDir" = {
      actual = [
        loki.common.path_prefix
        loki.common.storage.filesystem.chunks_directory
        loki.compactor.working_directory
      ];
      expected = [
        "/state"
        "/state/chunks"
        "/state/compactor"
      ];
    };
    "Loki: TSDB, schema v13, structured metadata, compactor retention" = {
      actual = {
        inherit (builtins.head loki.schema_config.configs) store schema object_store;
        inherit (loki.limits_config) allow_structured_metadata retention_period;
        inherit (loki.compactor) retention_enabled;
      };
      expected = {
        store = "tsdb";
        schema = "v13";
        object_store = "filesystem";
        allow_structured_metadata = true;
        retention_period = "72h";
        retention_enabled = true;
      };
    };
    "Loki settings use only keys both 3.4 and 3.6-3.7 accept" = {
      actual = backends.lokiUnknownKeys loki;
      expected = [ ];
    };
    "a Loki key outside the known ones is named, also inside a list" = {
      actual = backends.lokiUnknownKeys (
        loki
        // {
          limits_config = loki.limits_config // {
            volume_enabled = true;
          };
          schema_config.configs = [ { row_shards = 16; } ];
          ui.enabled = true;
        }
      );
      expected = [
        "limits_config.volume_enabled"
        "schema_config.configs.row_shards"
        "ui"
      ];
    };
    "Tempo's data source links its metrics to the Prometheus data source" = {
      actual = [
        tempoJson.serviceMap.datasourceUid
        tempoJson.tracesToMetrics.datasourceUid
      ];
      expected = [
        topology.prometheusDatasourceUid
        topology.prometheusDatasourceUid
      ];
    };
    "Prometheus exemplars link to the Tempo data source" = {
      actual = map (destination: destination.datasourceUid) exemplarDestinations;
      expected = [ topology.tempoDatasourceUid ];
    };
    "Grafana: anonymous role, listen address, no downloads" = {
      actual =
        let
          settings = backends.grafanaSettings {
            ports = moved;
            listenAddress = "127.0.0.1";
            anonymousRole = "Viewer";
            secretKey = "$__file{/k}";
          };
        in
        [
          settings."auth.anonymous".org_role
          settings.server.http_addr
          settings.plugins.preinstall_disabled
        ];
      expected = [
        "Viewer"
        "127.0.0.1"
        true
      ];
    };
    "Tempo 3's /var/tempo defaults move under the state directory" = {
      actual =
        let
          moved = backends.tempoVarTempoSettings { stateDir = "/state"; };
        in
        [
          moved.live_store.wal.path
          moved.live_store.shutdown_marker_dir
          moved.block_builder.wal.path
          moved.backend_scheduler.local_work_path
        ];
      expected = [
        "/state/live-store/traces"
        "/state/live-store/shutdown-marker"
        "/state/block-builder/traces"
        "/state"
      ];
    };
    "a plugin Grafana 13.2 requires and nixpkgs lacks is named; the rest installed" = {
      actual = backends.grafanaPluginChoice {
        grafanaVersion = "13.2.2";
        packaged = name: name != "tempo";
      };
      expected = {
        install = [
          "prometheus"
          "grafana-exploretraces-app"
          "grafana-metricsdrilldown-app"
        ];
        missing = [
          "Grafana 13.2.2 needs pkgs.grafanaPlugins.tempo, which this nixpkgs lacks; the lab runs offline, so Grafana cannot download it. Use a nixpkgs that packages it, or add it with an overlay."
        ];
      };
    };
    "Grafana 13.0 misses nothing without the wanted plugins" = {
      actual = backends.grafanaPluginChoice {
        grafanaVersion = "13.0.3";
        packaged = _: false;
      };
      expected = {
        install = [ ];
        missing = [ ];
      };
    };
    "tail sampling takes the contrib collector" = {
      actual = map backends.collectorPackage [
        null
        { policies = [ ]; }
      ];
      expected = [
        "opentelemetry-collector"
        "opentelemetry-collector-contrib"
      ];
    };
    "the load targets the entry hop on loopback" = {
      actual = backends.loadTargets 8080;
      expected = "GET http://127.0.0.1:8080/\n";
    };
  };
in
import ./expect.nix "backends tests" cases
