# The settings of the lab's backends as plain data, one function per backend
# taking the lab's ports (and paths where a backend keeps state). The modules
# under ../modules/tracing-lab hand them to the stock NixOS services; anything
# else that runs the same backends can take them too. Builtins only, so
# `nix-instantiate --eval --strict` tests it without nixpkgs (../tests/eval/pure-backends.nix).
let
  inherit (import ./topology.nix) tempoDatasourceUid prometheusDatasourceUid lokiDatasourceUid;

  atLeast = version: floor: builtins.compareVersions version floor >= 0;
  loopback = port: "127.0.0.1:${toString port}";

  # Provisioning files expand ${...} themselves, so PromQL's $__tags is written $$__tags.
  spanCalls = "traces_spanmetrics_calls_total{$$__tags}";
  spanLatencyBuckets = "traces_spanmetrics_latency_bucket{$$__tags}";
  spanLogs = "{$${__tags}} | trace_id=\"$${__span.traceId}\"";
in
rec {
  # OpenTelemetry Collector, core distribution: the otlp receiver, the
  # memory_limiter and batch processors, the otlp exporter. `otlp` is the
  # exporter's name before and after its rename to `otlp_grpc` (kept as an
  # alias), so this works with either collector. Its own metrics stay on the
  # built-in localhost:8888 (topology.nix's fixedPorts). With `tailSampling`
  # (an exercise's settings of the contrib distribution's `tail_sampling`
  # processor) every trace is held until its sampling decision, between the
  # memory limiter and the batching.
  collectorSettings =
    {
      ports,
      tailSampling ? null,
    }:
    withSignalPipelines ports {
      receivers.otlp.protocols = {
        grpc.endpoint = loopback ports.collectorOtlpGrpc;
        http.endpoint = loopback ports.collectorOtlpHttp;
      };
      processors = {
        memory_limiter = {
          check_interval = "1s";
          limit_mib = 256;
          spike_limit_mib = 64;
        };
        batch.timeout = "1s";
      }
      // (if tailSampling == null then { } else { tail_sampling = tailSampling; });
      exporters.otlp = {
        endpoint = loopback ports.tempoOtlpGrpc;
        tls.insecure = true;
      };
      service.pipelines.traces = {
        receivers = [ "otlp" ];
        processors = [
          "memory_limiter"
        ]
        ++ (if tailSampling == null then [ ] else [ "tail_sampling" ])
        ++ [ "batch" ];
        exporters = [ "otlp" ];
      };
    };

  # The collector's logs and metrics, next to the traces: the hops send all
  # three to its one OTLP receiver. Logs go to Loki's OTLP endpoint (Loki 3),
  # which keeps trace_id and span_id as structured metadata. Metrics go to
  # Prometheus through remote write, not Prometheus' own OTLP receiver: the
  # remote-write receiver is on already (Tempo writes there), it is the same
  # in Prometheus 2 and 3, while the OTLP receiver is a feature flag before
  # 2.47 and another flag in 3.x. Both exporters are in the core distribution
  # (nixpkgs' opentelemetry-collector, the releases' `otelcol`) and in contrib.
  # `names`: the exporters' type names, which collector 0.156 renamed (the old
  # ones stay as aliases, older collectors know only those).
  collectorSignalPipelines =
    {
      ports,
      names ? {
        otlpHttp = "otlphttp";
        prometheusRemoteWrite = "prometheusremotewrite";
      },
    }:
    let
      loki = "${names.otlpHttp}/loki";
      prometheus = "${names.prometheusRemoteWrite}/prometheus";
      pipeline = exporter: {
        receivers = [ "otlp" ];
        processors = [
          "memory_limiter"
          "batch"
        ];
        exporters = [ exporter ];
      };
    in
    {
      exporters = {
        # The exporter appends /v1/logs.
        ${loki}.endpoint = "http://${loopback ports.loki}/otlp";
        ${prometheus} = {
          endpoint = prometheusRemoteWriteUrl ports;
          # service.name becomes the `job` label, the hop's name in PromQL.
          resource_to_telemetry_conversion.enabled = false;
        };
      };
      pipelines = {
        logs = pipeline loki;
        metrics = pipeline prometheus;
      };
    };

  # collectorSettings with the logs and metrics pipelines added.
  withSignalPipelines =
    ports: settings:
    let
      signals = collectorSignalPipelines { inherit ports; };
    in
    settings
    // {
      exporters = settings.exporters // signals.exporters;
      service = settings.service // {
        pipelines = settings.service.pipelines // signals.pipelines;
      };
    };

  # Single-node Loki: everything in one process, chunks and TSDB index on the
  # filesystem under `stateDir`. Only keys that Loki 3.4 and 3.6-3.7 both
  # accept (lokiKeys; Loki rejects unknown ones). The HTTP API, also the OTLP
  # endpoint the collector writes to, listens on `listenAddress`; gRPC stays
  # on loopback. Retention: 72 h, deleted by the compactor (checked every
  # 10 min, deleted 1 h after marking); at the lab's load that is a few
  # hundred MB at most, well inside the lab VM's 4 GiB disk.
  lokiRetention = "72h";
  lokiSettings =
    {
      ports,
      stateDir,
      listenAddress ? "127.0.0.1",
    }:
    {
      auth_enabled = false;
      server = {
        http_listen_address = listenAddress;
        http_listen_port = ports.loki;
        grpc_listen_address = "127.0.0.1";
        grpc_listen_port = ports.lokiGrpc;
        log_level = "warn";
      };
      common = {
        path_prefix = stateDir;
        replication_factor = 1;
        # Its ring on loopback: a lab VM or a container may have no other
        # interface Loki would pick.
        instance_addr = "127.0.0.1";
        ring.kvstore.store = "inmemory";
        storage.filesystem = {
          chunks_directory = "${stateDir}/chunks";
          rules_directory = "${stateDir}/rules";
        };
      };
      schema_config.configs = [
        {
          from = "2024-04-01";
          store = "tsdb";
          object_store = "filesystem";
          schema = "v13";
          index = {
            prefix = "index_";
            period = "24h";
          };
        }
      ];
      limits_config = {
        # OTLP attributes that are not labels (trace_id, span_id, severity)
        # are kept as structured metadata.
        allow_structured_metadata = true;
        retention_period = lokiRetention;
      };
      compactor = {
        working_directory = "${stateDir}/compactor";
        retention_enabled = true;
        compaction_interval = "10m";
        retention_delete_delay = "1h";
        delete_request_store = "filesystem";
      };
      # The lab runs offline.
      analytics.reporting_enabled = false;
    };

  # The configuration keys lokiSettings may use, as a tree (`true`: a leaf):
  # each is in Loki 3.4's and 3.6-3.7's reference configuration. A new key
  # goes here only once both versions are known to accept it.
  lokiKeys = {
    auth_enabled = true;
    server = {
      http_listen_address = true;
      http_listen_port = true;
      grpc_listen_address = true;
      grpc_listen_port = true;
      log_level = true;
    };
    common = {
      path_prefix = true;
      replication_factor = true;
      instance_addr = true;
      ring.kvstore.store = true;
      storage.filesystem = {
        chunks_directory = true;
        rules_directory = true;
      };
    };
    schema_config.configs = {
      from = true;
      store = true;
      object_store = true;
      schema = true;
      index = {
        prefix = true;
        period = true;
      };
    };
    limits_config = {
      allow_structured_metadata = true;
      retention_period = true;
    };
    compactor = {
      working_directory = true;
      retention_enabled = true;
      compaction_interval = true;
      retention_delete_delay = true;
      delete_request_store = true;
    };
    analytics.reporting_enabled = true;
  };

  # The dotted paths of `settings` outside lokiKeys (a list's items are
  # checked against the same tree), e.g. [ "limits_config.bogus" ].
  lokiUnknownKeys =
    settings:
    let
      walk =
        prefix: known: value:
        if builtins.isList value then
          builtins.concatMap (walk prefix known) value
        else if builtins.isAttrs value then
          builtins.concatMap (
            name:
            let
              path = if prefix == "" then name else "${prefix}.${name}";
            in
            if !(builtins.isAttrs known && known ? ${name}) then
              [ path ]
            else if known.${name} == true then
              [ ]
            else
              walk path known.${name} value.${name}
          ) (builtins.attrNames value)
        else
          [ ];
    in
    walk "" lokiKeys settings;

  # Where Tempo's metrics-generator writes: Prometheus' remote-write receiver.
  prometheusRemoteWriteUrl = ports: "http://${loopback ports.prometheus}/api/v1/write";

  # Monolithic Tempo. Only blocks that Tempo 2.10 and 3.x both accept: no
  # ingester/compactor (gone in 3.0), no live_store (new in 3.0), no
  # local-blocks processor (removed in 3.0). Tempo rejects unknown keys.
  # Only the HTTP API listens on `listenAddress`; the gRPC server, where the
  # query frontend hands work to the queriers, stays on loopback.
  tempoSettings =
    {
      ports,
      listenAddress,
      stateDir,
    }:
    {
      stream_over_http_enabled = true;
      server = {
        http_listen_address = listenAddress;
        http_listen_port = ports.tempo;
        grpc_listen_address = "127.0.0.1";
        grpc_listen_port = ports.tempoGrpc;
      };
      distributor.receivers.otlp.protocols = {
        grpc.endpoint = loopback ports.tempoOtlpGrpc;
        http.endpoint = loopback ports.tempoOtlpHttp;
      };
      metrics_generator = {
        registry.external_labels.source = "tempo";
        storage = {
          path = "${stateDir}/generator/wal";
          remote_write = [
            {
              url = prometheusRemoteWriteUrl ports;
              send_exemplars = true;
            }
          ];
        };
      };
      storage.trace = {
        backend = "local";
        wal.path = "${stateDir}/wal";
        local.path = "${stateDir}/blocks";
      };
      overrides.defaults.metrics_generator.processors = [
        "service-graphs"
        "span-metrics"
      ];
      # The lab runs offline.
      usage_report.reporting_enabled = false;
    };

  # Tempo 3 keeps state under built-in /var/tempo defaults (live-store WAL and
  # shutdown marker, backend-scheduler work dir); Tempo 2.10 does not.
  tempoWritesVarTempo = tempoVersion: atLeast tempoVersion "3";

  # Tempo 3's /var/tempo defaults (as its /status/config lists them, 3.0.3)
  # moved under `stateDir`, for where no bind mount can map /var/tempo (the lab
  # as local processes). Tempo 2.10 rejects these keys: only with
  # tempoWritesVarTempo.
  tempoVarTempoSettings =
    { stateDir }:
    {
      live_store = {
        wal.path = "${stateDir}/live-store/traces";
        shutdown_marker_dir = "${stateDir}/live-store/shutdown-marker";
      };
      block_builder.wal.path = "${stateDir}/block-builder/traces";
      backend_scheduler.local_work_path = stateDir;
    };

  # Nothing is scraped: Tempo's metrics-generator writes service-graph and
  # span metrics through the remote-write receiver.
  prometheusFlags = [
    "--web.enable-remote-write-receiver"
    # Keeps the trace ids Tempo attaches, so Grafana can jump from a latency spike to a trace.
    "--enable-feature=exemplar-storage"
  ];

  # Grafana's own settings (grafana.ini sections). `secretKey` is a value
  # Grafana reads, such as "$__file{/path}", never the key itself.
  grafanaSettings =
    {
      ports,
      listenAddress,
      anonymousRole,
      secretKey,
    }:
    {
      server = {
        http_addr = listenAddress;
        http_port = ports.grafana;
      };
      security.secret_key = secretKey;
      "auth.anonymous" = {
        enabled = true;
        org_role = anonymousRole;
      };
      analytics = {
        reporting_enabled = false;
        check_for_updates = false;
        check_for_plugin_updates = false;
      };
      # No plugin downloads at start: the lab runs offline.
      plugins.preinstall_disabled = true;
    };

  # The data sources the dashboard and the trace links refer to by UID.
  grafanaDatasources =
    { ports }:
    [
      {
        name = "Prometheus";
        type = "prometheus";
        uid = prometheusDatasourceUid;
        url = "http://${loopback ports.prometheus}";
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
        url = "http://${loopback ports.tempo}";
        isDefault = true;
        jsonData = {
          serviceMap.datasourceUid = prometheusDatasourceUid;
          nodeGraph.enabled = true;
          search.hide = false;
          # From a span to its hop's log lines of the same trace: trace_id
          # is structured metadata in Loki, so the query filters on it
          # rather than on the line's text (Grafana's built-in query).
          tracesToLogsV2 = {
            datasourceUid = lokiDatasourceUid;
            spanStartTimeShift = "-5m";
            spanEndTimeShift = "5m";
            tags = [
              {
                key = "service.name";
                value = "service_name";
              }
            ];
            customQuery = true;
            query = spanLogs;
          };
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
                query = "sum(rate(${spanCalls}[1m]))";
              }
              {
                name = "Latency p95";
                query = "histogram_quantile(0.95, sum by (le) (rate(${spanLatencyBuckets}[1m])))";
              }
            ];
          };
        };
      }
      {
        name = "Loki";
        type = "loki";
        uid = lokiDatasourceUid;
        url = "http://${loopback ports.loki}";
        jsonData.derivedFields = [
          {
            # A log line's trace_id (structured metadata) links to its trace.
            name = "TraceID";
            matcherType = "label";
            matcherRegex = "trace_id";
            url = "$${__value.raw}";
            datasourceUid = tempoDatasourceUid;
            urlDisplayLabel = "Open the trace";
          }
        ];
      }
    ];

  # Grafana's provisioning files: the data sources, and the dashboards of
  # `dashboardsPath` (../modules/tracing-lab/dashboards) in one folder.
  grafanaProvisioning =
    { ports, dashboardsPath }:
    {
      datasources = {
        apiVersion = 1;
        prune = true;
        datasources = grafanaDatasources { inherit ports; };
      };
      dashboards = {
        apiVersion = 1;
        providers = [
          {
            name = "tracing-lab";
            folder = "Tracing lab";
            options.path = dashboardsPath;
          }
        ];
      };
    };

  # Grafana plugins by nixpkgs attribute name (pkgs.grafanaPlugins.<name>).
  # `required`: from 13.2 Grafana serves the Tempo and Prometheus data sources
  # from plugins, which it would otherwise download at start. `wanted`: the
  # Drilldown apps for traces and metrics, installed where nixpkgs packages
  # them (Grafana would download those too).
  grafanaPlugins = grafanaVersion: {
    required =
      if atLeast grafanaVersion "13.2" then
        [
          "tempo"
          "prometheus"
        ]
      else
        [ ];
    wanted = [
      "grafana-exploretraces-app"
      "grafana-metricsdrilldown-app"
    ];
  };

  # Which plugins to install, by name, given whether the nixpkgs at hand
  # packages one (`packaged name`), and what to say of a required one it lacks.
  grafanaPluginChoice =
    { grafanaVersion, packaged }:
    let
      plugins = grafanaPlugins grafanaVersion;
    in
    {
      install = builtins.filter packaged (plugins.required ++ plugins.wanted);
      missing = map (
        name:
        "Grafana ${grafanaVersion} needs pkgs.grafanaPlugins.${name}, which this nixpkgs lacks; the lab runs offline, so Grafana cannot download it. Use a nixpkgs that packages it, or add it with an overlay."
      ) (builtins.filter (name: !packaged name) plugins.required);
    };

  # The collector distribution (nixpkgs attribute) the settings need: tail
  # sampling is in the contrib one only.
  collectorPackage =
    tailSampling:
    if tailSampling == null then "opentelemetry-collector" else "opentelemetry-collector-contrib";

  # An exercise's tail_sampling settings for collectorSettings, or null.
  exerciseTailSampling = exercise: exercise.collector.tail_sampling or null;

  # The steady load: requests per second by default, and vegeta's arguments.
  # vegeta keeps the rate whatever the chain answers; its per-request results
  # are not needed, the traces are what counts.
  loadRate = 2;
  loadTargets = entryPort: "GET http://${loopback entryPort}/\n";
  loadAttackArgs =
    { rate, targetsFile }:
    [
      "attack"
      "-rate=${toString rate}/1s"
      "-duration=0"
      "-timeout=30s"
      "-targets=${targetsFile}"
      "-header=User-Agent: tracing-lab-load"
      "-output=/dev/null"
    ];
}
