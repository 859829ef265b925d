{ config, lib, ... }:
let
  inherit (lib) mkOption types;

  topology = import ../../lib/topology.nix;
  exercises = import ../../lib/exercises.nix;
  cfg = config.services.tracing-lab;

  lab = topology.chainOf cfg;

  # What listens on listenAddress.
  exposed = topology.exposedPorts {
    hops = cfg.chain;
    inherit (cfg) ports;
  };

  # A hop's options, from the chain's schema (schema/chain.schema.json).
  hopModule.options = (import ../../lib/hop-options.nix { inherit lib; }).hopOptions;

  portOption =
    name: what:
    mkOption {
      type = types.port;
      default = topology.defaultPorts.${name};
      description = "Port of ${what}.";
    };
in
{
  imports = [
    ../microservice.nix
    ./collector.nix
    ./collector-tiers.nix
    ./tempo.nix
    ./loki.nix
    ./prometheus.nix
    ./grafana.nix
    ./exercises.nix
    ./load.nix
    ./hosts.nix
  ];

  options.services.tracing-lab = {
    enable = lib.mkEnableOption ''
      the distributed tracing lab: a chain of microservice instances sending
      spans through the OpenTelemetry Collector to Grafana Tempo, with
      Prometheus for the metrics Tempo derives and Grafana to look at it all
    '';

    chain = mkOption {
      type = types.listOf (types.submodule hopModule);
      default = exercises.byName.${cfg.exercise}.hops;
      defaultText = lib.literalMD "the hops of the exercise {option}`services.tracing-lab.exercise`";
      example = lib.literalExpression ''
        [
          { name = "gateway"; port = 8080; responseTime = 20;
            calls = [ "catalog" "pricing" ]; callMode = "parallel"; }
          { name = "catalog"; port = 8081; responseTime = 40; calls = [ ]; }
          { name = "pricing"; port = 8082; responseTime = 30; errorRate = 0.05; }
          { name = "stock"; port = 8083; responseTime = 60; jitter = 20; }
        ]
      '';
      description = ''
        The hops, entry first. Each hop calls the next one unless it lists its
        callees in `calls`. The entry hop listens on
        {option}`services.tracing-lab.listenAddress`, the others on loopback.
      '';
    };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address of what a browser opens: the entry hop, Grafana, Tempo's HTTP
        API and Prometheus. Everything else listens on loopback only. None of
        these ask for a password by default (see
        {option}`services.tracing-lab.openFirewall`).
      '';
    };

    grafanaUrl = mkOption {
      type = types.str;
      default = "http://localhost:${toString cfg.ports.grafana}";
      defaultText = lib.literalExpression ''"http://localhost:''${toString ports.grafana}"'';
      description = "Grafana's URL as the browser sees it; each page links its trace there.";
    };

    otlpProtocol = mkOption {
      type = types.enum [
        "grpc"
        "http/protobuf"
      ];
      default = "http/protobuf";
      description = "How the hops send spans to the collector.";
    };

    grafanaAnonymousRole = mkOption {
      type = types.enum [
        "Viewer"
        "Editor"
        "Admin"
      ];
      default = "Viewer";
      example = "Admin";
      description = ''
        Role of whoever opens Grafana without logging in. A `Viewer` sees the
        dashboards; Explore, where each page's trace link opens, needs `Editor`
        or more. The lab VM, reachable only from its host, uses `Admin`.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to open the ports of the entry hop, Grafana, Tempo's HTTP API
        and Prometheus. With a {option}`services.tracing-lab.listenAddress`
        other than loopback, anyone who reaches them can read every trace
        (Tempo), read and write metrics (Prometheus' remote-write receiver is
        on), use Grafana with {option}`services.tracing-lab.grafanaAnonymousRole`
        and, unless you change it, log in as Grafana's `admin` with password
        `admin`.
      '';
    };

    ports = {
      grafana = portOption "grafana" "Grafana";
      tempo = portOption "tempo" "Tempo's HTTP API";
      tempoGrpc = portOption "tempoGrpc" "Tempo's gRPC server (on loopback)";
      tempoOtlpGrpc = portOption "tempoOtlpGrpc" "Tempo's OTLP/gRPC receiver";
      tempoOtlpHttp = portOption "tempoOtlpHttp" "Tempo's OTLP/HTTP receiver";
      prometheus = portOption "prometheus" "Prometheus";
      collectorOtlpGrpc = portOption "collectorOtlpGrpc" "the collector's OTLP/gRPC receiver";
      collectorOtlpHttp = portOption "collectorOtlpHttp" "the collector's OTLP/HTTP receiver";
      loki = portOption "loki" "Loki's HTTP API and OTLP endpoint (on loopback)";
      lokiGrpc = portOption "lokiGrpc" "Loki's gRPC server (on loopback)";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = map (message: {
      assertion = false;
      message = "services.tracing-lab.chain: ${message}";
    }) lab.errors;

    services.microservice.instances = lab.instances;

    # Started after the collector so that the first spans are not refused.
    systemd.services = lib.mapAttrs' (
      name: _:
      lib.nameValuePair (topology.serviceName name) {
        wants = [ "opentelemetry-collector.service" ];
        after = [ "opentelemetry-collector.service" ];
      }
    ) lab.instances;

    # What runs where, for people (see the login banner) and for the VM test.
    environment.etc."tracing-lab/lab.json".text = builtins.toJSON (
      lab.summary // { inherit (cfg) exercise; }
    );

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall (map (e: e.port) exposed);
  };
}
