# Eval tests of nixos/lib/topology.nix, no nixpkgs needed:
#   nix-instantiate --eval --strict nixos/tests/eval/pure-topology.nix
# Evaluates to true, or throws naming every failing case.
let
  topology = import ../../lib/topology.nix;
  exercises = import ../../lib/exercises.nix;

  default = topology.chain { hops = topology.defaultChain; };

  # Four hops with fan-out: gateway calls catalog and pricing in parallel,
  # pricing calls stock, catalog is a leaf.
  fanOut = topology.chain {
    hops = [
      {
        name = "gateway";
        port = 9001;
        calls = [
          "catalog"
          "pricing"
        ];
        callMode = "parallel";
      }
      {
        name = "catalog";
        port = 9002;
        calls = [ ];
      }
      {
        name = "pricing";
        port = 9003;
        errorRate = 1 / 20.0;
      }
      {
        name = "stock";
        port = 9004;
        jitter = 20;
        responseTime = 30;
      }
    ];
    otlpProtocol = "grpc";
    listenAddress = "0.0.0.0";
    grafanaUrl = "http://grafana.example:3000";
  };

  # Ports the lab never sets but its components take (the checks shared
  # with the lab runner are in tests/chains/, see ./pure-chains.nix).
  taken = topology.chain {
    hops = [
      {
        name = "a";
        port = 3000;
      }
      {
        name = "d";
        port = 9095;
      }
      {
        name = "e";
        port = 8888;
      }
    ];
  };

  empty = topology.chain { hops = [ ]; };

  # What the microservice module adds to a chain instance before building its environment.
  environmentOf =
    instance:
    topology.instanceEnvironment (
      instance
      // {
        serviceName = "microservice-x";
      }
    );

  link = topology.traceLink "http://localhost:3000";

  cases = {
    "default chain has no errors" = {
      actual = default.errors;
      expected = [ ];
    };
    "instances are named after the hops" = {
      actual = builtins.attrNames default.instances;
      expected = [
        "1"
        "2"
        "3"
      ];
    };
    "by default the entry hop listens on loopback" = {
      actual = default.instances."1".host;
      expected = "127.0.0.1";
    };
    "inner hops listen on loopback" = {
      actual = default.instances."2".host;
      expected = "127.0.0.1";
    };
    "a hop calls the next one" = {
      actual = default.instances."1".externalCallUrls;
      expected = [ "http://127.0.0.1:8081/" ];
    };
    "the last hop calls nobody" = {
      actual = default.instances."3".externalCallUrls;
      expected = [ ];
    };
    "spans go to the collector over http/protobuf" = {
      actual = default.instances."1".otlpEndpoint;
      expected = "http://127.0.0.1:4318";
    };
    "the summary names units" = {
      actual = map (hop: hop.unit) default.summary.hops;
      expected = [
        "microservice-1.service"
        "microservice-2.service"
        "microservice-3.service"
      ];
    };
    "the summary names callees by service name" = {
      actual = map (hop: hop.calledServices) default.summary.hops;
      expected = [
        [ "microservice-2" ]
        [ "microservice-3" ]
        [ ]
      ];
    };
    "the summary spells out calls by hop name, as a chain file does" = {
      actual = map (hop: hop.calls) fanOut.summary.hops;
      expected = [
        [
          "catalog"
          "pricing"
        ]
        [ ]
        [ "stock" ]
        [ ]
      ];
    };
    "only the first hop is the entry" = {
      actual = map (hop: hop.entry) default.summary.hops;
      expected = [
        true
        false
        false
      ];
    };
    "entry URL" = {
      actual = default.summary.entryUrl;
      expected = "http://localhost:8080/";
    };

    "fan-out has no errors" = {
      actual = fanOut.errors;
      expected = [ ];
    };
    "fan-out calls both callees" = {
      actual = fanOut.instances.gateway.externalCallUrls;
      expected = [
        "http://127.0.0.1:9002/"
        "http://127.0.0.1:9003/"
      ];
    };
    "fan-out mode" = {
      actual = fanOut.instances.gateway.callMode;
      expected = "parallel";
    };
    "an explicit leaf calls nobody" = {
      actual = fanOut.instances.catalog.externalCallUrls;
      expected = [ ];
    };
    "after a fan-out, a hop still calls the next one" = {
      actual = fanOut.instances.pricing.externalCallUrls;
      expected = [ "http://127.0.0.1:9004/" ];
    };
    "grpc export" = {
      actual = fanOut.instances.stock.otlpEndpoint;
      expected = "http://127.0.0.1:4317";
    };
    "the entry hop listens on listenAddress" = {
      actual = fanOut.instances.gateway.host;
      expected = "0.0.0.0";
    };
    "inner hops stay on loopback whatever listenAddress is" = {
      actual = fanOut.instances.catalog.host;
      expected = "127.0.0.1";
    };
    "jitter" = {
      actual = fanOut.instances.stock.jitter;
      expected = 20;
    };

    "hops on ports the lab's components take" = {
      actual = taken.errors;
      expected = [
        "hop `a` is on port 3000, which Grafana (services.tracing-lab.ports.grafana) takes"
        "hop `d` is on port 9095, which Tempo's gRPC server (services.tracing-lab.ports.tempoGrpc) takes"
        "hop `e` is on port 8888, which the collector's own metrics (scraped by Prometheus) takes"
      ];
    };
    "an empty chain still has a whole summary, without an entry URL" = {
      actual = builtins.fromJSON (builtins.toJSON empty.summary);
      expected = {
        hops = [ ];
        ports = topology.defaultPorts // topology.fixedPorts;
        listenAddress = "127.0.0.1";
        grafanaUrl = "http://localhost:3000";
        otlpProtocol = "http/protobuf";
        entryUrl = null;
      };
    };
    "a hop on Loki's ports is refused, naming Loki" = {
      actual =
        (topology.chain {
          hops = [
            {
              name = "a";
              port = 3100;
            }
            {
              name = "b";
              port = 9097;
            }
          ];
        }).errors;
      expected = [
        "hop `a` is on port 3100, which Loki's HTTP API (services.tracing-lab.ports.loki) takes"
        "hop `b` is on port 9097, which Loki's gRPC server (services.tracing-lab.ports.lokiGrpc) takes"
      ];
    };
    "a moved Tempo gRPC port frees 9095 and takes the new one" = {
      actual =
        (topology.chain {
          hops = [
            {
              name = "a";
              port = 9095;
            }
            {
              name = "b";
              port = 9096;
            }
          ];
          ports = topology.defaultPorts // {
            tempoGrpc = 9096;
          };
        }).errors;
      expected = [
        "hop `b` is on port 9096, which Tempo's gRPC server (services.tracing-lab.ports.tempoGrpc) takes"
      ];
    };

    "what a browser opens, entry first" = {
      actual = topology.exposedPorts { hops = topology.defaultChain; };
      expected = [
        {
          name = "chain";
          port = 8080;
          what = "the chain";
        }
        {
          name = "grafana";
          port = 3000;
          what = "Grafana";
        }
        {
          name = "tempo";
          port = 3200;
          what = "Tempo";
        }
        {
          name = "prometheus";
          port = 9090;
          what = "Prometheus";
        }
      ];
    };
    "an empty chain exposes only the backends" = {
      actual = map (exposed: exposed.name) (topology.exposedPorts { hops = [ ]; });
      expected = [
        "grafana"
        "tempo"
        "prometheus"
      ];
    };
    "the summary lists every port a component takes" = {
      actual = default.summary.ports;
      expected = {
        grafana = 3000;
        tempo = 3200;
        tempoGrpc = 9095;
        tempoOtlpGrpc = 4417;
        tempoOtlpHttp = 4418;
        prometheus = 9090;
        collectorOtlpGrpc = 4317;
        collectorOtlpHttp = 4318;
        collectorTelemetry = 8888;
        loki = 3100;
        lokiGrpc = 9097;
      };
    };

    "instance environment" = {
      actual = environmentOf default.instances."2";
      expected = {
        HTTP_HOST = "127.0.0.1";
        HTTP_PORT = "8081";
        OTEL_SERVICE_NAME = "microservice-x";
        TITLE = "Microservice 2";
        RESPONSE_TIME = "100";
        RESPONSE_TIME_JITTER = "0";
        EXTERNAL_CALL_URL = "http://127.0.0.1:8082/";
        EXTERNAL_CALL_MODE = "sequential";
        EXTERNAL_CALL_RETRIES = "0";
        PROPAGATION = "w3c";
        ERROR_RATE = "0";
        OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4318";
        OTEL_EXPORTER_OTLP_PROTOCOL = "http/protobuf";
        TRACE_LINK = link;
        OTEL_BSP_SCHEDULE_DELAY = "1000";
        OTEL_METRIC_EXPORT_INTERVAL = "10000";
      };
    };
    "a fractional error rate" = {
      actual = (environmentOf fanOut.instances.pricing).ERROR_RATE;
      expected = "0.05";
    };
    "several callees are comma-separated" = {
      actual = (environmentOf fanOut.instances.gateway).EXTERNAL_CALL_URL;
      expected = "http://127.0.0.1:9002/,http://127.0.0.1:9003/";
    };
    "optional variables are left out" = {
      actual = builtins.attrNames (
        topology.instanceEnvironment {
          host = "127.0.0.1";
          port = 8080;
          serviceName = "s";
          title = null;
          responseTime = 0;
          jitter = 0;
          externalCallUrls = [ ];
          callMode = "sequential";
          errorRate = 0;
          callTimeout = null;
          callRetries = 0;
          propagation = "w3c";
          baggage = null;
          otlpEndpoint = null;
          otlpProtocol = "grpc";
          sampler = "always_on";
          samplerArg = null;
          traceLink = null;
          environment = { };
        }
      );
      # As the lab runner writes them (lab/src/chain_file.rs, "unset settings
      # are left to the service"): a setting is left out only when null.
      expected = [
        "ERROR_RATE"
        "EXTERNAL_CALL_MODE"
        "EXTERNAL_CALL_RETRIES"
        "HTTP_HOST"
        "HTTP_PORT"
        "OTEL_EXPORTER_OTLP_PROTOCOL"
        "OTEL_SERVICE_NAME"
        "OTEL_TRACES_SAMPLER"
        "PROPAGATION"
        "RESPONSE_TIME"
        "RESPONSE_TIME_JITTER"
      ];
    };

    "an exercise's hop settings reach the service's variables" = {
      actual =
        let
          lab = topology.chain { hops = exercises.byName.timeout.hops; };
          retries = topology.chain { hops = exercises.byName.retries.hops; };
          mute = topology.chain { hops = exercises.byName.broken-propagation.hops; };
          sampled = topology.chain { hops = exercises.byName.sampling-independent.hops; };
          told = topology.chain { hops = exercises.byName.baggage.hops; };
          env = chain: name: environmentOf chain.instances.${name};
        in
        {
          timeout = (env lab "2").EXTERNAL_CALL_TIMEOUT;
          retries = (env retries "2").EXTERNAL_CALL_RETRIES;
          propagation = (env mute "2").PROPAGATION;
          sampler = [
            (env sampled "1").OTEL_TRACES_SAMPLER
            (env sampled "1").OTEL_TRACES_SAMPLER_ARG
            (env sampled "2").OTEL_TRACES_SAMPLER
            (env sampled "2").OTEL_TRACES_SAMPLER_ARG
          ];
          baggage = (env told "1").BAGGAGE;
          untold = (env told "2") ? BAGGAGE;
        };
      expected = {
        timeout = "200";
        retries = "3";
        propagation = "none";
        sampler = [
          "parentbased_traceidratio"
          "0.25"
          "traceidratio"
          "0.5"
        ];
        baggage = "lab.customer=alice";
        untold = false;
      };
    };
    "the default chain is the baseline exercise's" = {
      actual = topology.defaultChain;
      expected = exercises.byName.baseline.hops;
    };
    "every exercise's chain is sound" = {
      actual = builtins.filter (
        name: (topology.chain { hops = exercises.byName.${name}.hops; }).errors != [ ]
      ) exercises.names;
      expected = [ ];
    };
    "a variant is its exercise with the hop settings it names" = {
      actual = map (hop: hop.callMode or "sequential") exercises.byName.fan-out-sequential.hops;
      expected = [
        "sequential"
        "sequential"
        "sequential"
      ];
    };
    "trace link" = {
      actual = link;
      expected = "http://localhost:3000/explore?schemaVersion=1&orgId=1&panes=%7B%22trace%22:%7B%22datasource%22:%22tempo%22,%22queries%22:%5B%7B%22datasource%22:%7B%22type%22:%22tempo%22,%22uid%22:%22tempo%22%7D,%22query%22:%22{trace_id}%22,%22queryType%22:%22traceql%22,%22refId%22:%22A%22%7D%5D,%22range%22:%7B%22from%22:%22now-1h%22,%22to%22:%22now%22%7D%7D%7D";
    };
    "the trace link has exactly one placeholder" = {
      actual = builtins.length (builtins.split "\\{trace_id}" link);
      expected = 3;
    };
    "URL encoding" = {
      actual = topology.urlEncode "{\"a b\":[1,\"50%\"]}";
      expected = "%7B%22a%20b%22:%5B1,%2250%25%22%5D%7D";
    };
    "service names" = {
      actual = topology.serviceName "frontend";
      expected = "microservice-frontend";
    };
  };
in
import ./expect.nix "topology tests" cases
