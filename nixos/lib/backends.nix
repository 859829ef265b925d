# The settings of the lab's backends as plain data, one function per backend
# taking the lab's ports (and paths where a backend keeps state). The modules
# under ../modules/tracing-lab hand them to the stock NixOS services; anything
# else that runs the same backends can take them too. Builtins only, so
# `nix-instantiate --eval --strict` tests it without nixpkgs (../tests/eval/pure-backends.nix).
let
  inherit (import ./topology.nix) tempoDatasourceUid prometheusDatasourceUid fixedPorts;

  atLeast = version: floor: builtins.compareVersions version floor >= 0;
  loopback = port: "127.0.0.1:${toString port}";

  # Provisioning files expand ${...} themselves, so PromQL's $__tags is written $$__tags.
  spanCalls = "traces_spanmetrics_calls_total{$$__tags}";
  spanLatencyBuckets = "traces_spanmetrics_latency_bucket{$$__tags}";
in
rec {
  # OpenTelemetry Collector 0.144 renamed the OTLP exporters (`otlp` to
  # `otlp_grpc`, `otlphttp` to `otlp_http`), keeping the old names as
  # deprecated aliases that log a warning. So the name follows the collector
  # that runs it: nixos-26.05's 0.151 and newer take the new one, older ones
  # know only the old one (nixos/tests/eval/versions.nix checks both).
  collectorOtlpExporter =
    collectorVersion: if atLeast collectorVersion "0.144" then "otlp_grpc" else "otlp";

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
      exporter = collectorOtlpExporter collectorVersion;
    in
    {
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
