# The settings of the lab's backends as plain data, one function per backend
# taking the lab's ports (and paths where a backend keeps state). The modules
# under ../modules/tracing-lab hand them to the stock NixOS services; anything
# else that runs the same backends can take them too. Builtins only, so
# `nix-instantiate --eval --strict` tests it without nixpkgs (../tests/eval/pure-backends.nix).
let
  inherit (import ./topology.nix)
    tempoDatasourceUid
    prometheusDatasourceUid
    lokiDatasourceUid
    fixedPorts
    ;

  atLeast = version: floor: builtins.compareVersions version floor >= 0;
  loopback = port: "127.0.0.1:${toString port}";

  # Provisioning files expand ${...} themselves, so PromQL's $__tags is written $$__tags.
  spanCalls = "traces_spanmetrics_calls_total{$$__tags}";
  spanLatencyBuckets = "traces_spanmetrics_latency_bucket{$$__tags}";
  spanLogs = "{$${__tags}} | trace_id=\"$${__span.traceId}\"";
in
rec {
  # OpenTelemetry Collector 0.144 renamed the OTLP exporters (`otlp` to
  # `otlp_grpc`, `otlphttp` to `otlp_http`), keeping the old names as
  # deprecated aliases that log a warning. So the name follows the collector
  # that runs it: nixos-26.05's 0.151 and newer take the new one, older ones
  # know only the old one (nixos/tests/eval/versions.nix checks both).
  collectorOtlpExporter = collectorVersion: (collectorExporterNames collectorVersion).otlpGrpc;

  # The exporters' type names a collector of `collectorVersion` takes without
  # a deprecation warning: 0.144 renamed the OTLP ones, 0.156
  # `prometheusremotewrite`; the old names stay as aliases.
  collectorExporterNames = collectorVersion: {
    otlpGrpc = if atLeast collectorVersion "0.144" then "otlp_grpc" else "otlp";
    otlpHttp = if atLeast collectorVersion "0.144" then "otlp_http" else "otlphttp";
    prometheusRemoteWrite =
      if atLeast collectorVersion "0.156" then "prometheus_remote_write" else "prometheusremotewrite";
  };

  # The exporter's queue and retries, for the lab's load: 2 requests a second
  # (loadRate) plus a user clicking, about 15 spans a request, so some 30-50
  # spans a second. The batch processor (timeout 1s) turns that into about one
  # batch a second, and `queue_size` counts batches (requests to Tempo), not
  # spans: 600 batches carry a Tempo outage of about 10 minutes, some 30,000
  # spans, a few tens of MiB, well under the memory limiter's 256 MiB (if the
  # heap gets there anyway, the receiver refuses spans; the hops drop them and
  # their requests go on). `max_elapsed_time` gives a batch as long as the
  # queue lasts before it counts as failed; retries back off from 1 s to
  # 10 s, so spans reach Tempo within about 10 s of its return. Beyond the
  # queue, new batches are dropped (otelcol_exporter_enqueue_failed_spans)
  # and batches past their time too (otelcol_exporter_send_failed_spans).
  collectorSendingQueue = {
    enabled = true;
    num_consumers = 4;
    queue_size = 600;
  };
  collectorRetry = {
    enabled = true;
    initial_interval = "1s";
    max_interval = "10s";
    max_elapsed_time = "10m";
  };

  # The collector's own metrics (accepted, refused, sent, failed spans, the
  # queue, the dashboard's pipeline row): Prometheus' form, pulled on
  # loopback at the port the topology reserves. The `readers` form replaced `address` in 0.111; both lines the
  # lab runs on know only it.
  collectorTelemetryMetrics = {
    level = "normal";
    readers = [
      {
        pull.exporter.prometheus = {
          host = "127.0.0.1";
          port = fixedPorts.collectorTelemetry;
          # The same metric names on every version (otelcol_exporter_sent_spans):
          # older collectors appended _total and units unless told not to.
          without_type_suffix = true;
          without_units = true;
        };
      }
    ];
  };

  # OpenTelemetry Collector, core distribution: the otlp receiver, the
  # memory_limiter and batch processors, the OTLP/gRPC exporter to Tempo
  # (named for `collectorVersion`, see collectorOtlpExporter). With
  # `tailSampling` (an exercise's settings of the contrib distribution's
  # `tail_sampling` processor) every trace is held until its sampling
  # decision, between the memory limiter and the batching.
  collectorSettings =
    {
      ports,
      collectorVersion,
      tailSampling ? null,
    }:
    let
      names = collectorExporterNames collectorVersion;
      exporter = names.otlpGrpc;
    in
    withSignalPipelines { inherit ports names; } {
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
      exporters.${exporter} = {
        endpoint = loopback ports.tempoOtlpGrpc;
        tls.insecure = true;
        sending_queue = collectorSendingQueue;
        retry_on_failure = collectorRetry;
      };
      service = {
        telemetry.metrics = collectorTelemetryMetrics;
        pipelines.traces = {
          receivers = [ "otlp" ];
          processors = [
            "memory_limiter"
          ]
          ++ (if tailSampling == null then [ ] else [ "tail_sampling" ])
          ++ [ "batch" ];
          exporters = [ exporter ];
        };
      };
    };

  # What Prometheus scrapes: the collector's own metrics (the dashboard's
  # pipeline row). Everything else arrives by remote write.
  prometheusScrapeConfigs = [
    {
      job_name = "otel-collector";
      scrape_interval = "5s";
      static_configs = [ { targets = [ (loopback fixedPorts.collectorTelemetry) ]; } ];
    }
  ];

  # The collector's logs and metrics, next to the traces: the hops send all
  # three to its one OTLP receiver. Logs go to Loki's OTLP endpoint (Loki 3),
  # which keeps trace_id and span_id as structured metadata. Metrics go to
  # Prometheus through remote write, not Prometheus' own OTLP receiver: the
  # remote-write receiver is on already (Tempo writes there), it is the same
  # in Prometheus 2 and 3, while the OTLP receiver is a feature flag before
  # 2.47 and another flag in 3.x. Both exporters are in the core distribution
  # (nixpkgs' opentelemetry-collector, the releases' `otelcol`) and in contrib.
  # `names`: the exporters' type names for the collector's version
  # (collectorExporterNames).
  collectorSignalPipelines =
    {
      ports,
      names,
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
        ${loki} = {
          # The exporter appends /v1/logs.
          endpoint = "http://${loopback ports.loki}/otlp";
          # A Loki outage is carried as a Tempo one is: a request writes
          # fewer log records than spans, so the same 600 batches last as long.
          sending_queue = collectorSendingQueue;
          retry_on_failure = collectorRetry;
        };
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
    { ports, names }:
    settings:
    let
      signals = collectorSignalPipelines { inherit ports names; };
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

  # Tempo's metrics-generator writes service-graph and span metrics through
  # the remote-write receiver; only the collector is scraped.
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
