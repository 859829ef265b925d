# checks.<system>.eval-local: the process-compose configuration of
# `nix run .#local` (../../../nix/local.nix), asserted for every exercise when
# the check is evaluated: each process listens where the lab's ports say and
# its readiness probe asks there, the hops call their callees and send spans
# to the collector, the collector exports to Tempo, the dependencies start
# things in order, and nothing listens beyond 127.0.0.1. Broken variants show
# that each kind of miswiring is caught.
{ pkgs }:
let
  inherit (pkgs) lib;
  topology = import ../../lib/topology.nix;
  exercises = import ../../lib/exercises.nix;
  local = import ../../lib/local.nix;
  package = pkgs.callPackage ../../../nix/local.nix { };
  names = local.processNames;
  loopback = "127.0.0.1";

  envOf =
    process:
    lib.listToAttrs (
      map (
        entry:
        let
          kv = builtins.match "([^=]*)=(.*)" entry;
        in
        lib.nameValuePair (lib.elemAt kv 0) (lib.elemAt kv 1)
      ) (process.environment or [ ])
    );
  flagValue =
    flag: command:
    let
      found = builtins.match ".*'${flag}=([^']*)'.*" command;
    in
    if found == null then null else lib.head found;
  dependsOn = process: lib.sort lib.lessThan (lib.attrNames (process.depends_on or { }));
  conditions =
    process: lib.unique (lib.mapAttrsToList (_: d: d.condition) (process.depends_on or { }));
  probe = process: process.readiness_probe.http_get or { };

  # What is wrong with one exercise's configuration, as messages.
  errorsOf =
    {
      exercise,
      config,
      collector,
      tempo,
      grafana,
      # Tail sampling scaled out: the second tier's settings, by process.
      samplers ? { },
    }:
    let
      lab = local.chain exercise;
      ports = lab.summary.ports;
      processes = config.processes;
      expect =
        what: expected: found:
        lib.optional (
          expected != found
        ) "${exercise}: ${what}: expected ${builtins.toJSON expected}, found ${builtins.toJSON found}";

      hopErrors =
        hop:
        let
          name = names.hop hop.name;
          process = processes.${name} or { };
          env = envOf process;
        in
        if !(processes ? ${name}) then
          [ "${exercise}: no process ${name}" ]
        else
          expect "${name} HTTP_PORT" (toString hop.port) (env.HTTP_PORT or null)
          ++ expect "${name} HTTP_HOST" loopback (env.HTTP_HOST or null)
          ++ expect "${name} readiness probe" {
            host = loopback;
            inherit (hop) port;
            path = "/readyz";
          } (lib.getAttrs [ "host" "port" "path" ] (probe process))
          ++ expect "${name} EXTERNAL_CALL_URL" (map (
            callee:
            "http://${loopback}:${toString (lib.findFirst (h: h.name == callee) null lab.summary.hops).port}/"
          ) hop.calls) (lib.filter (url: url != "") (lib.splitString "," (env.EXTERNAL_CALL_URL or "")))
          ++ expect "${name} OTLP endpoint" "http://${loopback}:${toString ports.collectorOtlpHttp}" (
            env.OTEL_EXPORTER_OTLP_ENDPOINT or null
          )
          ++ expect "${name} depends on" (lib.sort lib.lessThan (
            [ names.collector ] ++ map names.hop hop.calls
          )) (dependsOn process);

      prometheus = processes.${names.prometheus};
      grafanaProcess = processes.${names.grafana};
      entry = lib.head lab.summary.hops;
      receivers = collector.receivers.otlp.protocols;
      tempoReceivers = tempo.distributor.receivers.otlp.protocols;
    in
    lib.concatMap hopErrors lab.summary.hops
    # Processes and their ports.
    ++ expect "processes" (lib.sort lib.lessThan (
      map (hop: names.hop hop.name) lab.summary.hops
      ++ [
        names.collector
        names.tempo
        names.loki
        names.prometheus
        names.grafana
        names.load
      ]
      ++ lib.attrNames samplers
    )) (lib.sort lib.lessThan (lib.attrNames processes))
    ++
      expect "collector receivers"
        [
          "${loopback}:${toString ports.collectorOtlpGrpc}"
          "${loopback}:${toString ports.collectorOtlpHttp}"
        ]
        [ receivers.grpc.endpoint receivers.http.endpoint ]
    ++ (
      if samplers == { } then
        expect "collector exports to Tempo's OTLP/gRPC receiver" tempoReceivers.grpc.endpoint (
          collector.exporters.${lib.head collector.service.pipelines.traces.exporters}.endpoint or null
        )
      else
        expect "the first tier routes to the samplers' receivers" (lib.mapAttrsToList (
          _: sampler: sampler.receivers.otlp.protocols.grpc.endpoint
        ) samplers) collector.exporters.loadbalancing.resolver.static.hostnames
        ++
          expect "the samplers export to Tempo's OTLP/gRPC receiver"
            (lib.mapAttrs (_: _: tempoReceivers.grpc.endpoint) samplers)
            (
              lib.mapAttrs (
                _: sampler:
                sampler.exporters.${lib.head sampler.service.pipelines.traces.exporters}.endpoint or null
              ) samplers
            )
    )
    ++
      expect "Tempo's OTLP receivers"
        [
          "${loopback}:${toString ports.tempoOtlpGrpc}"
          "${loopback}:${toString ports.tempoOtlpHttp}"
        ]
        [ tempoReceivers.grpc.endpoint tempoReceivers.http.endpoint ]
    ++ expect "Tempo's servers" {
      http_listen_address = loopback;
      http_listen_port = ports.tempo;
      grpc_listen_address = loopback;
      grpc_listen_port = ports.tempoGrpc;
    } tempo.server
    ++
      expect "Tempo writes to Prometheus" "http://${loopback}:${toString ports.prometheus}/api/v1/write"
        (lib.head tempo.metrics_generator.storage.remote_write).url
    ++ expect "Prometheus listens" "${loopback}:${toString ports.prometheus}" (
      flagValue "--web.listen-address" prometheus.command
    )
    ++ expect "Grafana listens" {
      http_addr = loopback;
      http_port = ports.grafana;
    } grafana.server
    ++ expect "Grafana's secret key is read from a file" true (
      lib.hasPrefix "$__file{" grafana.security.secret_key
    )
    # Readiness probes on each backend's own port.
    ++
      expect "readiness probes"
        {
          ${names.tempo} = ports.tempo;
          ${names.prometheus} = ports.prometheus;
          ${names.grafana} = ports.grafana;
          ${names.collector} = ports.collectorTelemetry;
          ${names.loki} = ports.loki;
        }
        (
          lib.genAttrs [ names.tempo names.prometheus names.grafana names.collector names.loki ] (
            name: (probe processes.${name}).port or null
          )
        )
    ++ expect "readiness probe hosts" [ loopback ] (
      lib.unique (lib.mapAttrsToList (_: process: (probe process).host or loopback) processes)
    )
    # Start order.
    ++
      expect "dependencies"
        {
          ${names.tempo} = [ names.prometheus ];
          ${names.collector} = lib.sort lib.lessThan (
            [
              names.tempo
              names.loki
            ]
            ++ lib.attrNames samplers
          );
          ${names.grafana} = [
            names.loki
            names.prometheus
            names.tempo
          ];
          ${names.load} = [ (names.hop entry.name) ];
          ${names.prometheus} = [ ];
        }
        (
          lib.genAttrs [ names.tempo names.collector names.grafana names.load names.prometheus ] (
            name: dependsOn processes.${name}
          )
        )
    ++ expect "dependency conditions" [ "process_healthy" ] (
      lib.unique (lib.concatMap conditions (lib.attrValues processes))
    )
    # process-compose must leave the commands' `$` to the shell.
    ++ expect "disable_env_expansion" true (config.disable_env_expansion or false)
    ++ expect "Grafana's state" true (
      lib.hasInfix "\"$TRACING_LAB_STATE/grafana\"" grafanaProcess.command
    );

  settingsOf = exercise: {
    inherit exercise;
    config = package.processCompose.${exercise};
    collector = package.settings.collector.${exercise};
    samplers = package.settings.samplers.${exercise};
    inherit (package.settings) tempo grafana;
  };

  errors = lib.concatMap (exercise: errorsOf (settingsOf exercise)) exercises.names;

  # One change each to the baseline, and a word its message must contain.
  base = settingsOf "baseline";
  hop =
    process: f:
    lib.recursiveUpdate base { config.processes.${process} = f base.config.processes.${process}; };
  # Replaces attributes of a process whole.
  replace =
    process: attrs:
    base
    // {
      config = base.config // {
        processes = base.config.processes // {
          ${process} = base.config.processes.${process} // attrs;
        };
      };
    };
  setEnv =
    process: name: value:
    hop process (p: {
      environment = map (e: if lib.hasPrefix "${name}=" e then "${name}=${value}" else e) p.environment;
    });
  broken = {
    "microservice-2 HTTP_PORT" = setEnv "microservice-2" "HTTP_PORT" "8089";
    "microservice-1 HTTP_HOST" = setEnv "microservice-1" "HTTP_HOST" "0.0.0.0";
    "microservice-1 EXTERNAL_CALL_URL" =
      setEnv "microservice-1" "EXTERNAL_CALL_URL"
        "http://127.0.0.1:8082/";
    "microservice-3 OTLP endpoint" =
      setEnv "microservice-3" "OTEL_EXPORTER_OTLP_ENDPOINT"
        "http://127.0.0.1:4418";
    "microservice-2 readiness probe" = hop "microservice-2" (_: {
      readiness_probe.http_get.port = 8082;
    });
    "microservice-1 depends on" = replace "microservice-1" {
      depends_on = removeAttrs base.config.processes.microservice-1.depends_on [ "microservice-2" ];
    };
    "collector exports to Tempo" = lib.recursiveUpdate base {
      collector.exporters.otlp_grpc.endpoint = "127.0.0.1:4418";
    };
    "Grafana listens" = lib.recursiveUpdate base { grafana.server.http_addr = "0.0.0.0"; };
    "Tempo's servers" = lib.recursiveUpdate base { tempo.server.http_listen_address = "0.0.0.0"; };
    "Prometheus listens" = hop names.prometheus (p: {
      command = builtins.replaceStrings [ "127.0.0.1:9090" ] [ "0.0.0.0:9090" ] p.command;
    });
    "readiness probes" = hop names.tempo (_: {
      readiness_probe.http_get.port = topology.defaultPorts.tempoGrpc;
    });
    "dependencies" = replace names.collector { depends_on = { }; };
  };
  unnoticed = lib.filter (
    what:
    let
      found = errorsOf broken.${what};
    in
    !(lib.any (lib.hasInfix what) found)
  ) (lib.attrNames broken);
in
if errors != [ ] then
  throw "eval-local: the local lab is miswired:\n${lib.concatStringsSep "\n" errors}"
else if unnoticed != [ ] then
  throw "eval-local: these broken variants were not reported: ${lib.concatStringsSep ", " unnoticed}"
else
  pkgs.runCommand "eval-local" { } ''
    echo "process-compose configurations of ${toString (lib.length exercises.names)} exercises checked" >$out
  ''
