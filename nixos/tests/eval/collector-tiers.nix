# checks.<system>.eval-collector-tiers: tail sampling scaled out
# (services.tracing-lab.collector.tailSampling.replicas), asserted on
# evaluated NixOS configurations when the check is evaluated: the two tiers
# wire up, and bad input is refused with a message naming the option.
{ pkgs, nixosSystem }:
let
  inherit (pkgs) lib;
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;

  onHost =
    settings:
    (nixosSystem {
      modules = [
        ../../modules/tracing-lab
        {
          services.tracing-lab = {
            enable = true;
          }
          // settings;
          boot.isContainer = true;
          system.stateVersion = "26.05";
          nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        }
      ];
    }).config;
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  scaled = onHost { exercise = "tail-sampling-scaled"; };
  byService = onHost { exercise = "tail-sampling-scaled-by-service"; };
  samplerUnits = [
    "opentelemetry-collector-sampler-1"
    "opentelemetry-collector-sampler-2"
  ];
  samplerSettings = scaled.services.tracing-lab.collector.tailSampling.samplerSettings;
  tempoGrpc = scaled.services.tempo.settings.distributor.receivers.otlp.protocols.grpc.endpoint;

  cases = {
    "scaled: both tiers run the contrib collector, the samplers as units of their own" = {
      actual = {
        package = lib.getName scaled.services.opentelemetry-collector.package;
        units = lib.filter (name: lib.hasPrefix "opentelemetry-collector" name) (
          lib.attrNames scaled.systemd.services
        );
        firstTierWaits = with scaled.systemd.services.opentelemetry-collector; [
          wants
          after
        ];
        assertions = failedAssertions scaled;
      };
      expected = {
        package = "otelcol-contrib";
        units = [ "opentelemetry-collector" ] ++ samplerUnits;
        # Loki's wait comes from ./loki.nix (the collector's logs go there).
        firstTierWaits = [
          (map (unit: "${unit}.service") samplerUnits ++ [ "loki.service" ])
          (map (unit: "${unit}.service") samplerUnits ++ [ "loki.service" ])
        ];
        assertions = [ ];
      };
    };
    "scaled: the first tier routes to exactly where the samplers listen" = {
      actual =
        scaled.services.opentelemetry-collector.settings.exporters.loadbalancing.resolver.static.hostnames;
      expected = map (unit: samplerSettings.${unit}.receivers.otlp.protocols.grpc.endpoint) samplerUnits;
    };
    "scaled: every sampler decides with the exercise's policies and sends to Tempo" = {
      actual = map (unit: {
        inherit (samplerSettings.${unit}.processors) tail_sampling;
        tempo = samplerSettings.${unit}.exporters.otlp_grpc.endpoint;
      }) samplerUnits;
      expected = lib.replicate 2 {
        tail_sampling = exercises.byName.tail-sampling-scaled.collector.tail_sampling;
        tempo = tempoGrpc;
      };
    };
    "scaled: a sampler unit is hardened, runs as a dynamic user, starts its own config" = {
      actual =
        let
          service = scaled.systemd.services.opentelemetry-collector-sampler-1.serviceConfig;
        in
        {
          inherit (service)
            DynamicUser
            ProtectSystem
            NoNewPrivileges
            CapabilityBoundingSet
            ;
          execStart = builtins.match ".*/bin/otelcol-contrib --config=file:/nix/store/[^/]*-opentelemetry-collector-sampler-1.yaml" service.ExecStart;
        };
      expected = {
        DynamicUser = true;
        ProtectSystem = "strict";
        NoNewPrivileges = true;
        CapabilityBoundingSet = [ "" ];
        execStart = [ ];
      };
    };
    "the variant routes by service, all else the same" = {
      actual = {
        key = byService.services.opentelemetry-collector.settings.exporters.loadbalancing.routing_key;
        samplers = byService.services.tracing-lab.collector.tailSampling.samplerSettings == samplerSettings;
      };
      expected = {
        key = "service";
        samplers = true;
      };
    };
    "replicas = 1 on the scaled exercise: one collector, as for tail-sampling" = {
      actual =
        let
          one = onHost {
            exercise = "tail-sampling-scaled";
            collector.tailSampling.replicas = 1;
          };
        in
        {
          inherit (one.services.opentelemetry-collector) settings;
          samplers = one.services.tracing-lab.collector.tailSampling.samplerSettings;
        };
      expected = {
        settings = backends.collectorSettings {
          inherit (scaled.services.tracing-lab) ports;
          collectorVersion = scaled.services.opentelemetry-collector.package.version;
          tailSampling = exercises.byName.tail-sampling-scaled.collector.tail_sampling;
        };
        samplers = { };
      };
    };

    "refused: replicas below 1" = {
      actual = failedAssertions (onHost {
        exercise = "tail-sampling";
        collector.tailSampling.replicas = 0;
      });
      expected = [
        "services.tracing-lab.collector.tailSampling.replicas must be a whole number, 1 or more; got 0"
      ];
    };
    "refused: scaled out on an exercise without tail sampling" = {
      actual = failedAssertions (onHost {
        collector.tailSampling.replicas = 3;
      });
      expected = [
        "services.tracing-lab.collector.tailSampling.replicas = 3 scales tail sampling out, but exercise `baseline` has no tail-sampling policy (its collector.tail_sampling): the second tier would have nothing to decide. Set it to 1, or run an exercise with tail sampling."
      ];
    };
    "refused: a hop on a sampler's port" = {
      actual = failedAssertions (onHost {
        exercise = "tail-sampling-scaled";
        chain = map (
          hop: hop // lib.optionalAttrs (hop.name == "3") { port = 4328; }
        ) exercises.byName.tail-sampling-scaled.hops;
      });
      expected = [
        "services.tracing-lab.chain: hop `3` is on port 4328, which tail-sampling collector 2's OTLP/gRPC receiver (services.tracing-lab.collector.tailSampling.replicas) takes"
      ];
    };
    "refused: a sampler port another component takes" = {
      actual = failedAssertions (onHost {
        exercise = "tail-sampling-scaled";
        ports.prometheus = 8890;
      });
      expected = [
        "services.tracing-lab.collector.tailSampling.replicas = 2: port 8890, tail-sampling collector 2's own metrics (services.tracing-lab.collector.tailSampling.replicas), is taken by Prometheus (services.tracing-lab.ports.prometheus)"
      ];
    };
  };
in
assert import ./expect.nix "eval-collector-tiers" cases;
pkgs.writeText "eval-collector-tiers" "Every case of nixos/tests/eval/collector-tiers.nix held when this check was evaluated.\n"
