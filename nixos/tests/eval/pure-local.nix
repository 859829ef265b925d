# Eval tests of nixos/lib/local.nix, no nixpkgs needed:
#   nix-instantiate --eval --strict nixos/tests/eval/pure-local.nix
# Evaluates to true, or throws naming every failing case.
let
  local = import ../../lib/local.nix;

  bin = {
    microservice = "/bin/microservice";
    collector = "/bin/otelcol";
    tempo = "/bin/tempo";
    loki = "/bin/loki";
    prometheus = "/bin/prometheus";
    grafana = "/bin/grafana";
    vegeta = "/bin/vegeta";
    bash = "/bin/bash";
  };
  files = {
    collector = "file:/etc/otelcol.yaml";
    tempo = "/etc/tempo.yaml";
    loki = "/etc/loki.yaml";
    prometheus = "/etc/prometheus.yml";
    grafana = "/etc/grafana.ini";
    loadTargets = "/etc/targets";
  };
  configOf =
    exercise:
    local.processCompose {
      inherit exercise bin files;
      grafanaHome = "/share/grafana";
    };
  baseline = configOf "baseline";
  tempo3 = local.tempoSettings { tempoVersion = "3.0.2"; };
  tempo2 = local.tempoSettings { tempoVersion = "2.10.8"; };
  grafana = local.grafanaSettings {
    pluginsDir = null;
    provisioningDir = "/provisioning";
  };

  cases = {
    "the baseline runs the lab's processes" = {
      actual = builtins.attrNames baseline.processes;
      expected = [
        "grafana"
        "load"
        "loki"
        "microservice-1"
        "microservice-2"
        "microservice-3"
        "otel-collector"
        "prometheus"
        "tempo"
      ];
    };
    "a hop is the service with its unit's environment" = {
      actual = {
        inherit (baseline.processes.microservice-3) command;
        env = builtins.filter (
          e: builtins.match "(HTTP_HOST|HTTP_PORT|OTEL_EXPORTER_OTLP_ENDPOINT)=.*" e != null
        ) baseline.processes.microservice-3.environment;
      };
      expected = {
        command = "exec '/bin/microservice'";
        env = [
          "HTTP_HOST=127.0.0.1"
          "HTTP_PORT=8082"
          "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"
        ];
      };
    };
    "Loki keeps its state in the state directory, expanded by Loki" = {
      actual = [
        baseline.processes.loki.command
        local.lokiSettings.common.path_prefix
        baseline.processes.loki.readiness_probe.http_get.port
      ];
      expected = [
        "exec '/bin/loki' '-config.file=/etc/loki.yaml' '-config.expand-env=true'"
        "\${TRACING_LAB_STATE}/loki"
        3100
      ];
    };
    "Prometheus keeps its data in the state directory, expanded by the shell" = {
      actual = baseline.processes.prometheus.command;
      expected = "exec '/bin/prometheus' '--config.file=/etc/prometheus.yml' '--web.listen-address=127.0.0.1:9090' '--storage.tsdb.path='\"$TRACING_LAB_STATE\"'/prometheus' '--web.enable-remote-write-receiver' '--enable-feature=exemplar-storage'";
    };
    "Tempo expands the state directory in its settings" = {
      actual = [
        baseline.processes.tempo.command
        tempo2.storage.trace.wal.path
      ];
      expected = [
        "exec '/bin/tempo' '-config.file=/etc/tempo.yaml' '-config.expand-env=true'"
        "\${TRACING_LAB_STATE}/tempo/wal"
      ];
    };
    "Tempo 3 gets its /var/tempo paths moved, Tempo 2.10 none" = {
      actual = [
        (tempo3.live_store.wal.path or null)
        (tempo2.live_store or null)
      ];
      expected = [
        "\${TRACING_LAB_STATE}/tempo/live-store/traces"
        null
      ];
    };
    "Grafana's state and secret key at run time" = {
      actual = [
        grafana.paths.data
        grafana.paths.plugins
        grafana.security.secret_key
        baseline.processes.grafana.command
      ];
      expected = [
        "$__env{TRACING_LAB_STATE}/grafana"
        "$__env{TRACING_LAB_STATE}/grafana/plugins"
        "$__file{secret_key}"
        "cd \"$TRACING_LAB_STATE/grafana\" && exec '/bin/grafana' server -homepath '/share/grafana' -config '/etc/grafana.ini'"
      ];
    };
    "tail sampling takes the contrib collector" = {
      actual = map local.collectorPackage [
        "baseline"
        "tail-sampling"
      ];
      expected = [
        "opentelemetry-collector"
        "opentelemetry-collector-contrib"
      ];
    };
    "tail sampling scaled out: a first tier in front of a process per sampler" = {
      actual =
        let
          config = local.processCompose {
            exercise = "tail-sampling-scaled";
            inherit bin;
            files = files // {
              samplers = {
                otel-sampler-1 = "file:/etc/s1.yaml";
                otel-sampler-2 = "file:/etc/s2.yaml";
              };
            };
            grafanaHome = "/share/grafana";
          };
        in
        {
          firstTierWaitsFor = builtins.attrNames config.processes.otel-collector.depends_on;
          sampler2 = {
            inherit (config.processes.otel-sampler-2) command;
            ready = config.processes.otel-sampler-2.readiness_probe.http_get.port;
          };
          routes =
            (local.collectorSettings {
              exercise = "tail-sampling-scaled-by-service";
              collectorVersion = "0.156.0";
            }).exporters.loadbalancing.routing_key;
          samplers = builtins.attrNames (
            local.samplers {
              exercise = "tail-sampling-scaled";
              collectorVersion = "0.156.0";
            }
          );
        };
      expected = {
        firstTierWaitsFor = [
          "loki"
          "otel-sampler-1"
          "otel-sampler-2"
          "tempo"
        ];
        sampler2 = {
          command = "exec '/bin/otelcol' '--config=file:/etc/s2.yaml'";
          ready = 8890;
        };
        routes = "service";
        samplers = [
          "otel-sampler-1"
          "otel-sampler-2"
        ];
      };
    };
    "an unknown exercise is an error" = {
      actual = (builtins.tryEval (builtins.deepSeq (configOf "no-such-exercise") true)).success;
      expected = false;
    };
  };
in
import ./expect.nix "local lab tests" cases
