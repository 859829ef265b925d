# Tail sampling scaled out, as plain data: with `replicas` above 1 the
# collector the hops send to becomes a first tier that only routes (the
# contrib `loadbalancing` exporter), and `replicas` tail-sampling collectors
# behind it sample. A tail sampler must see every span of a trace, so the
# first tier routes by trace id; an exercise may route by something else to
# show what breaks. Each tier's settings are ./backends.nix's collectorSettings
# with the parts that differ laid over. Builtins only, tested by
# ../tests/eval/pure-collector-tiers.nix.
let
  inherit (builtins)
    concatMap
    elem
    filter
    genList
    isInt
    toJSON
    ;

  backends = import ./backends.nix;
  inherit (import ./chain-schema.nix) message;

  option = "services.tracing-lab.collector.tailSampling.replicas";
  loopback = port: "127.0.0.1:${toString port}";
  scaled = replicas: isInt replicas && replicas > 1;
in
rec {
  inherit option;

  # What the loadbalancing exporter can route traces by, and what the lab uses.
  routingKeys = [
    "traceID"
    "service"
  ];
  defaultRoutingKey = "traceID";

  # Where the samplers listen: sampler i (from 1) takes these plus i - 1.
  # Clear of the lab's other default ports (topology.nix) for up to 8 replicas;
  # `errors` names any clash.
  samplerFirstPorts = {
    otlpGrpc = 4327;
    telemetry = 8889;
  };

  # An exercise's scale-out (exercises/<name>.json, `collector`).
  exerciseReplicas = exercise: exercise.collector.replicas or 1;
  exerciseRoutingKey = exercise: exercise.collector.routing_key or defaultRoutingKey;

  # The second tier, one entry per sampler; none unless scaled out.
  samplers =
    replicas:
    if scaled replicas then
      genList (i: {
        index = i + 1;
        unit = "opentelemetry-collector-sampler-${toString (i + 1)}";
        otlpGrpc = samplerFirstPorts.otlpGrpc + i;
        telemetry = samplerFirstPorts.telemetry + i;
      }) replicas
    else
      [ ];

  # Each port the samplers take, with who takes it (for clash messages).
  samplerPorts =
    replicas:
    concatMap (sampler: [
      {
        port = sampler.otlpGrpc;
        owner = "tail-sampling collector ${toString sampler.index}'s OTLP/gRPC receiver (${option})";
      }
      {
        port = sampler.telemetry;
        owner = "tail-sampling collector ${toString sampler.index}'s own metrics (${option})";
      }
    ]) (samplers replicas);

  # What is wrong with a scale-out, as messages naming the option; empty when
  # all is well. `takenPorts`: the lab's other ports as [ { port; owner; } ].
  errors =
    {
      replicas,
      tailSampling,
      routingKey,
      exercise,
      takenPorts ? [ ],
    }:
    if !(isInt replicas) || replicas < 1 then
      [ "${option} must be a whole number, 1 or more; got ${toJSON replicas}" ]
    else
      (
        if scaled replicas && tailSampling == null then
          [
            "${option} = ${toString replicas} scales tail sampling out, but exercise `${exercise}` has no tail-sampling policy (its collector.tail_sampling): the second tier would have nothing to decide. Set it to 1, or run an exercise with tail sampling."
          ]
        else
          [ ]
      )
      ++ (
        if elem routingKey routingKeys then
          [ ]
        else
          [
            "exercise `${exercise}`: collector.routing_key ${toJSON routingKey} is not one the lab routes traces by (${toJSON routingKeys})"
          ]
      )
      ++ concatMap (
        mine:
        map (
          taken:
          "${option} = ${toString replicas}: port ${toString mine.port}, ${mine.owner}, is taken by ${taken.owner}"
        ) (filter (taken: taken.port == mine.port) takenPorts)
      ) (samplerPorts replicas);

  # Hops on a sampler's port, in the chain's words (schema/chain-messages.json).
  hopClashes =
    { hops, replicas }:
    concatMap (
      hop:
      map (
        taken:
        message "portTaken" {
          hop = hop.name;
          port = toString hop.port;
          inherit (taken) owner;
        }
      ) (filter (taken: taken.port == hop.port) (samplerPorts replicas))
    ) hops;

  # The collector the hops send to. One replica: the lab's only collector,
  # tail sampling included. More: the first tier, which routes each span by
  # `routingKey` to one of the samplers and samples nothing itself.
  receiverSettings =
    {
      ports,
      collectorVersion,
      tailSampling,
      replicas,
      routingKey ? defaultRoutingKey,
    }:
    if scaled replicas then
      let
        base = backends.collectorSettings { inherit ports collectorVersion; };
        tempoExporter = backends.collectorOtlpExporter collectorVersion;
      in
      base
      // {
        # The first tier sends traces only to the samplers; logs and metrics
        # go on as with one collector.
        exporters = removeAttrs base.exporters [ tempoExporter ] // {
          loadbalancing = {
            routing_key = routingKey;
            protocol.otlp.tls.insecure = true;
            resolver.static.hostnames = map (sampler: loopback sampler.otlpGrpc) (samplers replicas);
          };
        };
        service = base.service // {
          pipelines = base.service.pipelines // {
            traces = base.service.pipelines.traces // {
              exporters = [ "loadbalancing" ];
            };
          };
        };
      }
    else
      backends.collectorSettings { inherit ports collectorVersion tailSampling; };

  # A second-tier collector: OTLP/gRPC from the first tier only, traces
  # only, the exercise's tail sampling, on to Tempo; its own metrics on its
  # own port.
  samplerSettings =
    {
      ports,
      collectorVersion,
      tailSampling,
      sampler,
    }:
    let
      base = backends.collectorSettings {
        ports = ports // {
          collectorOtlpGrpc = sampler.otlpGrpc;
        };
        inherit collectorVersion tailSampling;
      };
      tempoExporter = backends.collectorOtlpExporter collectorVersion;
      metrics = base.service.telemetry.metrics;
    in
    base
    // {
      receivers.otlp.protocols = {
        inherit (base.receivers.otlp.protocols) grpc;
      };
      exporters = {
        ${tempoExporter} = base.exporters.${tempoExporter};
      };
      service = base.service // {
        pipelines = { inherit (base.service.pipelines) traces; };
        telemetry = base.service.telemetry // {
          metrics = metrics // {
            readers = map (reader: {
              pull.exporter.prometheus = reader.pull.exporter.prometheus // {
                port = sampler.telemetry;
              };
            }) metrics.readers;
          };
        };
      };
    };
}
