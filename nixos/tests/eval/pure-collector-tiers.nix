# Eval tests of nixos/lib/collector-tiers.nix, no nixpkgs needed:
#   nix-instantiate --eval --strict nixos/tests/eval/pure-collector-tiers.nix
# Evaluates to true, or throws naming every failing case.
let
  topology = import ../../lib/topology.nix;
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;
  tiers = import ../../lib/collector-tiers.nix;

  ports = topology.defaultPorts;
  scaled = exercises.byName.tail-sampling-scaled;
  byService = exercises.byName.tail-sampling-scaled-by-service;
  tailSampling = backends.exerciseTailSampling scaled;

  collectorVersion = "0.156.0";
  first = tiers.receiverSettings {
    inherit ports tailSampling collectorVersion;
    replicas = 2;
  };
  samplers = tiers.samplers 3;
  second = tiers.samplerSettings {
    inherit ports tailSampling collectorVersion;
    sampler = builtins.elemAt samplers 1;
  };
  errorsOf =
    args:
    tiers.errors (
      {
        inherit tailSampling;
        routingKey = "traceID";
        exercise = "tail-sampling-scaled";
      }
      // args
    );
  takenPorts = [
    {
      port = 4328;
      owner = "Tempo";
    }
  ];

  cases = {
    "one replica: the lab's only collector, exactly backends.collectorSettings" = {
      actual = tiers.receiverSettings {
        inherit ports tailSampling collectorVersion;
        replicas = 1;
      };
      expected = backends.collectorSettings { inherit ports tailSampling collectorVersion; };
    };
    "one replica: no second tier, no port taken" = {
      actual = [
        (tiers.samplers 1)
        (tiers.samplerPorts 1)
      ];
      expected = [
        [ ]
        [ ]
      ];
    };
    "the first tier routes by trace id to every sampler and samples nothing" = {
      actual = {
        inherit (first.exporters) loadbalancing;
        inherit (first.service.pipelines) traces;
        receivers = first.receivers.otlp.protocols;
        samples = first.processors ? tail_sampling;
      };
      expected = {
        loadbalancing = {
          routing_key = "traceID";
          protocol.otlp.tls.insecure = true;
          resolver.static.hostnames = [
            "127.0.0.1:4327"
            "127.0.0.1:4328"
          ];
        };
        traces = {
          receivers = [ "otlp" ];
          processors = [
            "memory_limiter"
            "batch"
          ];
          exporters = [ "loadbalancing" ];
        };
        receivers = {
          grpc.endpoint = "127.0.0.1:4317";
          http.endpoint = "127.0.0.1:4318";
        };
        samples = false;
      };
    };
    "the variant's first tier routes by service" = {
      actual =
        (tiers.receiverSettings {
          inherit collectorVersion;
          inherit ports tailSampling;
          replicas = 2;
          routingKey = tiers.exerciseRoutingKey byService;
        }).exporters.loadbalancing.routing_key;
      expected = "service";
    };
    "a sampler: OTLP/gRPC on its port, the exercise's tail sampling, on to Tempo" = {
      actual = {
        receivers = second.receivers.otlp.protocols;
        inherit (second.processors) tail_sampling;
        processors = second.service.pipelines.traces.processors;
        tempo = second.exporters.otlp_grpc.endpoint;
        pipelines = builtins.attrNames second.service.pipelines;
        metrics = second.service.telemetry.metrics.readers;
      };
      expected = {
        receivers.grpc.endpoint = "127.0.0.1:4328";
        tail_sampling = scaled.collector.tail_sampling;
        processors = [
          "memory_limiter"
          "tail_sampling"
          "batch"
        ];
        tempo = "127.0.0.1:4417";
        pipelines = [ "traces" ];
        metrics = [
          {
            pull.exporter.prometheus = {
              host = "127.0.0.1";
              port = 8890;
              without_type_suffix = true;
              without_units = true;
            };
          }
        ];
      };
    };
    "the exercise and its variant: two replicas, routed by trace id and by service" = {
      actual =
        map
          (e: [
            (tiers.exerciseReplicas e)
            (tiers.exerciseRoutingKey e)
          ])
          [
            scaled
            byService
            exercises.byName.tail-sampling
          ];
      expected = [
        [
          2
          "traceID"
        ]
        [
          2
          "service"
        ]
        [
          1
          "traceID"
        ]
      ];
    };
    "a sound scale-out has no error" = {
      actual = errorsOf { replicas = 2; };
      expected = [ ];
    };
    "refused: replicas below 1, named" = {
      actual = map (replicas: errorsOf { inherit replicas; }) [
        0
        (-1)
      ];
      expected = [
        [ "services.tracing-lab.collector.tailSampling.replicas must be a whole number, 1 or more; got 0" ]
        [
          "services.tracing-lab.collector.tailSampling.replicas must be a whole number, 1 or more; got -1"
        ]
      ];
    };
    "refused: scaled out without a tail-sampling policy, named" = {
      actual = errorsOf {
        replicas = 2;
        tailSampling = null;
        exercise = "baseline";
      };
      expected = [
        "services.tracing-lab.collector.tailSampling.replicas = 2 scales tail sampling out, but exercise `baseline` has no tail-sampling policy (its collector.tail_sampling): the second tier would have nothing to decide. Set it to 1, or run an exercise with tail sampling."
      ];
    };
    "one replica without tail sampling is every other exercise: no error" = {
      actual = errorsOf {
        replicas = 1;
        tailSampling = null;
      };
      expected = [ ];
    };
    "refused: a routing key the lab does not route by" = {
      actual = errorsOf {
        replicas = 2;
        routingKey = "resource";
      };
      expected = [
        "exercise `tail-sampling-scaled`: collector.routing_key \"resource\" is not one the lab routes traces by ([\"traceID\",\"service\"])"
      ];
    };
    "refused: a sampler port another component takes" = {
      actual = errorsOf {
        replicas = 2;
        inherit takenPorts;
      };
      expected = [
        "services.tracing-lab.collector.tailSampling.replicas = 2: port 4328, tail-sampling collector 2's OTLP/gRPC receiver (services.tracing-lab.collector.tailSampling.replicas), is taken by Tempo"
      ];
    };
    "the lab's default ports leave room for 8 samplers" = {
      actual = errorsOf {
        replicas = 8;
        takenPorts = map (name: {
          port = (ports // topology.fixedPorts).${name};
          owner = name;
        }) (builtins.attrNames (ports // topology.fixedPorts));
      };
      expected = [ ];
    };
    "refused: a hop on a sampler's port, in the chain's words" = {
      actual = tiers.hopClashes {
        replicas = 2;
        hops = [
          {
            name = "a";
            port = 8080;
          }
          {
            name = "b";
            port = 8890;
          }
        ];
      };
      expected = [
        "hop `b` is on port 8890, which tail-sampling collector 2's own metrics (services.tracing-lab.collector.tailSampling.replicas) takes"
      ];
    };
  };
in
import ./expect.nix "pure-collector-tiers" cases
