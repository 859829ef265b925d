# What is miswired in an evaluated NixOS configuration of the lab, as a list
# of messages (empty when all is well). Each check compares two things that
# must agree, read from where they end up (the units, the backends' settings,
# /etc/tracing-lab/lab.json), and its message says what it expected and got.
{ lib }:
config:
let
  inherit (lib)
    concatMap
    filter
    hasPrefix
    optional
    splitString
    ;

  lab = builtins.fromJSON config.environment.etc."tracing-lab/lab.json".text;
  inherit (lab) ports;
  collector = config.services.opentelemetry-collector.settings;
  tempo = config.services.tempo.settings;
  prometheus = config.services.prometheus;
  grafana = config.services.grafana;

  loopback = port: "127.0.0.1:${toString port}";
  sorted = lib.sort lib.lessThan;

  # systemd expands % in Environment=, so the module doubles each literal one.
  units = config.systemd.services;
  unescape = lib.replaceStrings [ "%%" ] [ "%" ];
  environmentOf = unit: lib.mapAttrs (_: unescape) units.${unit}.environment;
  hopByName = lib.listToAttrs (map (hop: lib.nameValuePair hop.name hop) lab.hops);

  collectorReceivers = collector.receivers.otlp.protocols;
  # The traces pipeline's exporter to Tempo, whatever its version's name for it.
  collectorExporter =
    collector.exporters.${lib.head collector.service.pipelines.traces.exporters} or { };
  tempoReceivers = tempo.distributor.receivers.otlp.protocols;

  # Grafana's Explore state in a trace link: the part after `panes=`, percent-decoded.
  linkPanes =
    link:
    let
      codes = {
        "%20" = " ";
        "%22" = "\"";
        "%23" = "#";
        "%25" = "%";
        "%26" = "&";
        "%2B" = "+";
        "%5B" = "[";
        "%5D" = "]";
        "%7B" = "{";
        "%7D" = "}";
      };
      encoded = lib.last (splitString "panes=" link);
    in
    builtins.fromJSON (
      builtins.replaceStrings (builtins.attrNames codes) (builtins.attrValues codes) encoded
    );

  datasources = grafana.provision.datasources.settings.datasources;
  datasourceOfType = type: lib.findFirst (ds: ds.type == type) { uid = null; } datasources;
  tempoDatasource = datasourceOfType "tempo";
  prometheusDatasource = datasourceOfType "prometheus";

  # Every `datasource = { type; uid; }` in a dashboard.
  datasourceRefs =
    value:
    if builtins.isAttrs value then
      optional (builtins.isAttrs (value.datasource or null)) value.datasource
      ++ concatMap datasourceRefs (builtins.attrValues value)
    else if builtins.isList value then
      concatMap datasourceRefs value
    else
      [ ];
  dashboardsOf =
    provider:
    let
      dir = provider.options.path;
      files = filter (lib.hasSuffix ".json") (builtins.attrNames (builtins.readDir dir));
    in
    map (file: builtins.fromJSON (builtins.readFile (dir + "/${file}"))) files;
  dashboardRefs = concatMap datasourceRefs (
    concatMap dashboardsOf grafana.provision.dashboards.settings.providers
  );
  provisioned = ref: builtins.any (ds: ds.uid == ref.uid && ds.type == ref.type) datasources;

  hopChecks =
    hop:
    let
      unit = lib.removeSuffix ".service" hop.unit;
      env = environmentOf unit;
      protocol = if env.OTEL_EXPORTER_OTLP_PROTOCOL == "grpc" then "grpc" else "http";
      link = env.TRACE_LINK;
      panes = linkPanes link;
    in
    [
      {
        what = "${unit} listens on (HTTP_HOST:HTTP_PORT)";
        expected = "${if hop.entry then lab.listenAddress else "127.0.0.1"}:${toString hop.port}";
        actual = "${env.HTTP_HOST}:${env.HTTP_PORT}";
      }
      {
        what = "${unit} calls (EXTERNAL_CALL_URL)";
        expected = map (name: "http://${loopback hopByName.${name}.port}/") hop.calls;
        actual = filter (url: url != "") (splitString "," (env.EXTERNAL_CALL_URL or ""));
      }
      {
        what = "${unit} sends spans to (OTEL_EXPORTER_OTLP_ENDPOINT)";
        expected = "http://${collectorReceivers.${protocol}.endpoint}";
        actual = env.OTEL_EXPORTER_OTLP_ENDPOINT;
      }
      {
        what = "${unit}'s trace link opens Explore on Grafana (lab.json grafanaUrl)";
        expected = true;
        actual = hasPrefix "${lab.grafanaUrl}/explore?" link;
      }
      {
        what = "${unit}'s trace link uses the Tempo data source (pane, query)";
        expected = [
          tempoDatasource.uid
          tempoDatasource.uid
        ];
        actual = [
          panes.trace.datasource
          (lib.head panes.trace.queries).datasource.uid
        ];
      }
    ];

  checks = concatMap hopChecks lab.hops ++ [
    # Each port in lab.json is the one its component listens on.
    {
      what = "Grafana's port (lab.json ports.grafana)";
      expected = ports.grafana;
      actual = grafana.settings.server.http_port;
    }
    {
      what = "the port in lab.json grafanaUrl";
      expected = true;
      actual = lib.hasSuffix ":${toString ports.grafana}" lab.grafanaUrl;
    }
    {
      what = "Tempo's HTTP port (lab.json ports.tempo)";
      expected = ports.tempo;
      actual = tempo.server.http_listen_port;
    }
    {
      what = "Tempo's gRPC port (lab.json ports.tempoGrpc)";
      expected = ports.tempoGrpc;
      actual = tempo.server.grpc_listen_port;
    }
    {
      what = "Tempo's OTLP/gRPC receiver (lab.json ports.tempoOtlpGrpc)";
      expected = loopback ports.tempoOtlpGrpc;
      actual = tempoReceivers.grpc.endpoint;
    }
    {
      what = "Tempo's OTLP/HTTP receiver (lab.json ports.tempoOtlpHttp)";
      expected = loopback ports.tempoOtlpHttp;
      actual = tempoReceivers.http.endpoint;
    }
    {
      what = "Prometheus' port (lab.json ports.prometheus)";
      expected = ports.prometheus;
      actual = prometheus.port;
    }
    {
      what = "the collector's OTLP/gRPC receiver (lab.json ports.collectorOtlpGrpc)";
      expected = loopback ports.collectorOtlpGrpc;
      actual = collectorReceivers.grpc.endpoint;
    }
    {
      what = "the collector's OTLP/HTTP receiver (lab.json ports.collectorOtlpHttp)";
      expected = loopback ports.collectorOtlpHttp;
      actual = collectorReceivers.http.endpoint;
    }
    {
      # On the port lab.json and the topology reserve, where Prometheus scrapes.
      what = "the collector's own metrics (lab.json ports.collectorTelemetry) and Prometheus' scrape of them";
      expected = [
        (loopback ports.collectorTelemetry)
        [ (loopback ports.collectorTelemetry) ]
      ];
      actual = [
        (lib.concatMapStringsSep "," (
          reader: "${reader.pull.exporter.prometheus.host}:${toString reader.pull.exporter.prometheus.port}"
        ) (collector.service.telemetry.metrics.readers or [ ]))
        (concatMap (job: concatMap (c: c.targets) job.static_configs) prometheus.scrapeConfigs)
      ];
    }

    # Only what a browser opens listens beyond loopback.
    {
      what = "the addresses of Grafana, Tempo's HTTP API and Prometheus (lab.json listenAddress)";
      expected = [
        lab.listenAddress
        lab.listenAddress
        lab.listenAddress
      ];
      actual = [
        grafana.settings.server.http_addr
        tempo.server.http_listen_address
        prometheus.listenAddress
      ];
    }
    {
      what = "Tempo's gRPC address";
      expected = "127.0.0.1";
      actual = tempo.server.grpc_listen_address;
    }
    {
      what = "the ports the firewall opens (what listens on listenAddress, if openFirewall)";
      expected = sorted (
        lib.optionals config.services.tracing-lab.openFirewall (
          optional (lab.hops != [ ]) (lib.head lab.hops).port
          ++ [
            grafana.settings.server.http_port
            tempo.server.http_listen_port
            prometheus.port
          ]
        )
      );
      actual = sorted config.networking.firewall.allowedTCPPorts;
    }

    # Spans: hops -> collector -> Tempo.
    {
      what = "the collector's traces pipeline (receivers, exporters)";
      expected = [
        [ "otlp" ]
        1
      ];
      actual = [
        collector.service.pipelines.traces.receivers
        (builtins.length collector.service.pipelines.traces.exporters)
      ];
    }
    {
      what = "the collector's exporter (Tempo's OTLP/gRPC receiver)";
      expected = tempoReceivers.grpc.endpoint;
      actual = collectorExporter.endpoint or null;
    }
    {
      what = "services.opentelemetry-collector.validateConfigFile";
      expected = true;
      actual = config.services.opentelemetry-collector.validateConfigFile;
    }

    # Metrics: Tempo's metrics-generator -> Prometheus.
    {
      what = "Tempo's metrics-generator writes to (Prometheus' remote-write URL)";
      expected = [ "http://${loopback prometheus.port}/api/v1/write" ];
      actual = map (target: target.url) tempo.metrics_generator.storage.remote_write;
    }
    {
      what = "Prometheus accepts remote writes (--web.enable-remote-write-receiver)";
      expected = true;
      actual = builtins.elem "--web.enable-remote-write-receiver" prometheus.extraFlags;
    }
    {
      what = "Tempo's metrics-generator processors";
      expected = [
        "service-graphs"
        "span-metrics"
      ];
      actual = tempo.overrides.defaults.metrics_generator.processors;
    }

    # Grafana: its data sources, and the UIDs that refer to them.
    {
      what = "Grafana's data source URLs (Tempo, Prometheus)";
      expected = [
        "http://${loopback tempo.server.http_listen_port}"
        "http://${loopback prometheus.port}"
      ];
      actual = [
        tempoDatasource.url
        prometheusDatasource.url
      ];
    }
    {
      what = "the Tempo data source's links to metrics (serviceMap, tracesToMetrics)";
      expected = [
        prometheusDatasource.uid
        prometheusDatasource.uid
      ];
      actual = [
        tempoDatasource.jsonData.serviceMap.datasourceUid
        tempoDatasource.jsonData.tracesToMetrics.datasourceUid
      ];
    }
    {
      what = "the Prometheus data source's exemplar links";
      expected = [ tempoDatasource.uid ];
      actual = map (
        destination: destination.datasourceUid
      ) prometheusDatasource.jsonData.exemplarTraceIdDestinations;
    }
    {
      what = "data sources the dashboards use that Grafana does not have";
      expected = [ ];
      actual = filter (ref: !provisioned ref) dashboardRefs;
    }
  ];

  failing = filter (check: check.actual != check.expected) checks;
  message =
    check:
    "${check.what}: expected ${builtins.toJSON check.expected}, got ${builtins.toJSON check.actual}";
in
map message failing
