# The lab's pure logic: ports, URLs, the chain's wiring and each instance's
# environment. The hops' settings, defaults and messages come from
# ./chain-schema.nix. Builtins only, so `nix-instantiate --eval --strict` can
# test it without nixpkgs (see ../tests/eval/pure-topology.nix).
let
  inherit (builtins)
    attrNames
    attrValues
    concatLists
    concatMap
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    genList
    head
    length
    listToAttrs
    map
    match
    replaceStrings
    toJSON
    ;

  imap0 = f: list: genList (i: f i (elemAt list i)) (length list);
  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  unique = foldl' (seen: x: if elem x seen then seen else seen ++ [ x ]) [ ];
  # Each value that occurs more than once, once.
  duplicates = list: unique (filter (x: length (filter (y: y == x) list) > 1) list);

  # What a hop may leave out, and the rest of the chain's model.
  chainSchema = import ./chain-schema.nix;
  hopDefaults = chainSchema.defaults;
  inherit (chainSchema) message;

  exercises = import ./exercises.nix;
in
rec {
  tempoDatasourceUid = "tempo";
  prometheusDatasourceUid = "prometheus";
  lokiDatasourceUid = "loki";

  defaultPorts = {
    grafana = 3000;
    tempo = 3200;
    # Tempo's gRPC server: its query frontend hands queries to its queriers there.
    tempoGrpc = 9095;
    # Tempo's own OTLP receiver, moved off 4317/4318 because the collector owns those.
    tempoOtlpGrpc = 4417;
    tempoOtlpHttp = 4418;
    prometheus = 9090;
    collectorOtlpGrpc = 4317;
    collectorOtlpHttp = 4318;
    # Loki's HTTP API (also its OTLP endpoint) and its gRPC server, whose own
    # default 9095 is Tempo's.
    loki = 3100;
    lokiGrpc = 9097;
  };

  # Ports that are not options: the collector's own metrics, on its usual
  # 8888 (backends.nix sets it there, and Prometheus scrapes it).
  fixedPorts = {
    collectorTelemetry = 8888;
  };

  # Who takes each port of `defaultPorts // fixedPorts`, for error messages.
  portOwners = {
    grafana = "Grafana (services.tracing-lab.ports.grafana)";
    tempo = "Tempo's HTTP API (services.tracing-lab.ports.tempo)";
    tempoGrpc = "Tempo's gRPC server (services.tracing-lab.ports.tempoGrpc)";
    tempoOtlpGrpc = "Tempo's OTLP/gRPC receiver (services.tracing-lab.ports.tempoOtlpGrpc)";
    tempoOtlpHttp = "Tempo's OTLP/HTTP receiver (services.tracing-lab.ports.tempoOtlpHttp)";
    prometheus = "Prometheus (services.tracing-lab.ports.prometheus)";
    collectorOtlpGrpc = "the collector's OTLP/gRPC receiver (services.tracing-lab.ports.collectorOtlpGrpc)";
    collectorOtlpHttp = "the collector's OTLP/HTTP receiver (services.tracing-lab.ports.collectorOtlpHttp)";
    collectorTelemetry = "the collector's own metrics (scraped by Prometheus)";
    loki = "Loki's HTTP API (services.tracing-lab.ports.loki)";
    lokiGrpc = "Loki's gRPC server (services.tracing-lab.ports.lokiGrpc)";
  };

  # The baseline exercise's three hops (exercises/baseline.json, which the lab
  # runner reads too). No jitter, so every simulated-work span lasts at least
  # its configured delay and the waterfall reads as a staircase.
  defaultChain = exercises.byName.baseline.hops;

  # Instance `name` runs as unit microservice-<name>.service with this service.name,
  # so units, traces and metrics all use the same word.
  serviceName = name: "microservice-${name}";

  # Percent-encodes what may not stand raw in a URL query (enough for a JSON document).
  urlEncode =
    let
      escapes = {
        "%" = "%25";
        " " = "%20";
        "\"" = "%22";
        "#" = "%23";
        "&" = "%26";
        "+" = "%2B";
        "[" = "%5B";
        "]" = "%5D";
        "{" = "%7B";
        "}" = "%7D";
      };
    in
    replaceStrings (attrNames escapes) (attrValues escapes);

  # A Grafana Explore URL that opens one trace in the Tempo data source. The
  # literal `{trace_id}` stays unencoded: the service substitutes it per trace.
  traceLink =
    grafanaUrl:
    let
      placeholder = "@TRACE_ID@";
      pane = {
        trace = {
          datasource = tempoDatasourceUid;
          queries = [
            {
              refId = "A";
              datasource = {
                type = "tempo";
                uid = tempoDatasourceUid;
              };
              queryType = "traceql";
              query = placeholder;
            }
          ];
          range = {
            from = "now-1h";
            to = "now";
          };
        };
      };
    in
    "${grafanaUrl}/explore?schemaVersion=1&orgId=1&panes="
    + replaceStrings [ placeholder ] [ "{trace_id}" ] (urlEncode (toJSON pane));

  # The collector endpoint an instance exports to, in the form the OTLP SDK expects
  # (for http/protobuf the base URL; the SDK appends /v1/traces).
  otlpEndpoint =
    {
      protocol,
      ports,
      address ? "127.0.0.1",
    }:
    "http://${address}:${
      toString (collectorPort {
        inherit protocol ports;
      })
    }";

  # The collector's OTLP receiver port for `protocol`.
  collectorPort =
    { protocol, ports }:
    if protocol == "grpc" then ports.collectorOtlpGrpc else ports.collectorOtlpHttp;

  # The environment of one instance, from the values of its NixOS options:
  # where it listens and exports, whom it calls, and each hop setting the
  # schema gives a variable.
  instanceEnvironment =
    instance:
    {
      HTTP_HOST = instance.host;
      HTTP_PORT = toString instance.port;
      OTEL_SERVICE_NAME = instance.serviceName;
      OTEL_EXPORTER_OTLP_PROTOCOL = instance.otlpProtocol;
    }
    // chainSchema.environment instance
    // optionalAttrs (instance.externalCallUrls != [ ]) {
      EXTERNAL_CALL_URL = concatStringsSep "," instance.externalCallUrls;
    }
    // optionalAttrs (instance.otlpEndpoint != null) {
      OTEL_EXPORTER_OTLP_ENDPOINT = instance.otlpEndpoint;
    }
    // optionalAttrs (instance.traceLink != null) { TRACE_LINK = instance.traceLink; }
    // instance.environment;

  # What a browser opens, each listening on the lab's `listenAddress`: the entry
  # hop (when there is one), Grafana, Tempo's HTTP API and Prometheus. The
  # firewall, QEMU's port forwarding and the VM's banner all use this list.
  exposedPorts =
    {
      hops,
      ports ? defaultPorts,
    }:
    optional (hops != [ ]) {
      name = "chain";
      port = (head hops).port;
      what = "the chain";
    }
    ++ [
      {
        name = "grafana";
        port = ports.grafana;
        what = "Grafana";
      }
      {
        name = "tempo";
        port = ports.tempo;
        what = "Tempo";
      }
      {
        name = "prometheus";
        port = ports.prometheus;
        what = "Prometheus";
      }
    ];

  # Wires a list of hops into microservice instances. Each hop calls the next
  # one in the list unless it names its callees in `calls` (fan-out, or [ ] for
  # a leaf). The first hop is the entry: it listens on `listenAddress`, the
  # others on loopback only.
  #
  # The lab of services.tracing-lab's values (`cfg`), as every module of it
  # wires it.
  chainOf =
    cfg:
    chain {
      hops = cfg.chain;
      inherit (cfg)
        ports
        listenAddress
        grafanaUrl
        otlpProtocol
        hostName
        hosts
        backendsHost
        interface
        ;
    };

  # Across machines (docs/multi-host.md): a hop runs on its `host`, or on
  # `backendsHost` (the machine with the collector and the other backends)
  # without one; `hostName` is this machine, and only its hops become
  # instances. A call to a hop on another host goes to that host's address
  # (`hosts.<name>.address`), spans from another host to the collector's.
  # With none of these set (the default) every hop runs here, as before.
  #
  # Returns { errors; instances; summary; crossHost; }: `errors` lists what
  # is wrong with the hops (the lab turns them into assertions), `instances`
  # fits services.microservice.instances, `summary` is the lab's description
  # as written to /etc/tracing-lab/lab.json (the VM test reads it), and
  # `crossHost` what must be reachable from other machines.
  chain =
    {
      hops,
      ports ? defaultPorts,
      listenAddress ? "127.0.0.1",
      grafanaUrl ? "http://localhost:${toString ports.grafana}",
      otlpProtocol ? "http/protobuf",
      hosts ? { },
      hostName ? null,
      backendsHost ? null,
      interface ? null,
    }:
    let
      hs = map (hop: hopDefaults // hop) hops;

      # Where each hop runs, and how another machine reaches a host.
      hostOf = hop: if hop.host != null then hop.host else backendsHost;
      isLocal = hop: hostOf hop == hostName;
      addressOf = host: if host == null then null else (hosts.${host} or { }).address or null;
      hostLabel = host: if host == null then "(services.tracing-lab.backendsHost)" else host;
      # Every call as { caller; callee; } hops, known callees only.
      allCalls = concatLists (
        imap0 (
          i: hop:
          map (name: {
            caller = hop;
            callee = byName.${name};
          }) (known (callsOf i hop))
        ) hs
      );
      acrossHosts = filter (call: hostOf call.caller != hostOf call.callee) allCalls;
      # Hops another machine calls: they listen on their host's address.
      calledFromAfar = hop: builtins.any (call: call.callee.name == hop.name) acrossHosts;
      collectorAddress = addressOf backendsHost;
      # Hops whose spans travel to the collector on another machine.
      exportingAfar = filter (hop: hostOf hop != backendsHost) hs;
      names = map (hop: hop.name) hs;
      hopPlaces = map (hop: { inherit (hop) host port; }) hs;
      # Each port a lab component takes, with who takes it.
      componentPorts = map (name: {
        port = (ports // fixedPorts).${name};
        owner = portOwners.${name} or name;
      }) (attrNames (ports // fixedPorts));
      byName = listToAttrs (
        map (hop: {
          inherit (hop) name;
          value = hop;
        }) hs
      );
      callsOf =
        i: hop:
        if hop.calls != null then
          hop.calls
        else if i + 1 < length hs then
          [ (elemAt names (i + 1)) ]
        else
          [ ];
      known = filter (name: byName ? ${name});
      url = hop: "http://127.0.0.1:${toString hop.port}/";
      # A hop another machine calls listens on its host's address, and its
      # callers on its own machine call it there too; the rest on loopback.
      # Without an address (an error below) loopback keeps the rest evaluable.
      listensAfar = hop: calledFromAfar hop && addressOf (hostOf hop) != null;
      hopUrl =
        hop: if listensAfar hop then "http://${addressOf (hostOf hop)}:${toString hop.port}/" else url hop;

      callErrors =
        i: hop:
        let
          calls = callsOf i hop;
          unknown = filter (name: !(byName ? ${name})) calls;
        in
        map (
          callee:
          message "unknownCallee" {
            hop = hop.name;
            inherit callee;
          }
        ) unknown
        ++ optional (elem hop.name calls) (message "callsItself" { hop = hop.name; });

      portClash =
        hop: taken:
        message "portTaken" {
          hop = hop.name;
          port = toString hop.port;
          inherit (taken) owner;
        };

      # In the lab runner's order (lab/src/chain_file/check.rs), with the
      # words of ../../schema/chain-messages.json; tests/chains/ holds both.
      errors = concatLists [
        (optional (hs == [ ]) (message "emptyChain" { }))
        (map (name: message "duplicateName" { hop = name; }) (duplicates names))
        (map (
          name:
          message "badName" {
            hop = name;
            pattern = chainSchema.namePattern;
          }
        ) (filter (name: match chainSchema.namePattern name == null) names))
        (map (
          hop:
          message "badHost" {
            hop = hop.name;
            inherit (hop) host;
            pattern = chainSchema.hostPattern;
          }
        ) (filter (hop: hop.host != null && match chainSchema.hostPattern hop.host == null) hs))
        # A port clashes only on one machine; port 0 (any free port, for the
        # lab runner) never.
        (map (
          taken:
          let
            onIt = chainSchema.hopList ", " (
              map (hop: hop.name) (filter (hop: hop.port == taken.port && hop.host == taken.host) hs)
            );
          in
          if taken.host == null then
            message "duplicatePort" {
              port = toString taken.port;
              hops = onIt;
            }
          else
            message "duplicatePortOnHost" {
              port = toString taken.port;
              inherit (taken) host;
              hops = onIt;
            }
        ) (duplicates (filter (taken: taken.port != 0) hopPlaces)))
        # The components run on the backends' machine only.
        (concatLists (
          map (hop: map (portClash hop) (filter (taken: taken.port == hop.port) componentPorts)) (
            filter (hop: hostOf hop == backendsHost) hs
          )
        ))
        (concatMap chainSchema.boundProblems hs)
        (concatMap (
          hop: map (chainSchema.requirementProblem hop.name) (chainSchema.unmetRequirements hop)
        ) hs)
        (concatLists (imap0 callErrors hs))
        (optional (cycle != null) (message "cycle" { cycle = chainSchema.hopList " → " cycle; }))
        # The NixOS lab's own, across machines: after the lab runner's.
        hostErrors
      ];

      hostErrors = concatLists [
        (map (
          hop:
          message "unknownHost" {
            hop = hop.name;
            inherit (hop) host;
          }
        ) (filter (hop: hop.host != null && !(hosts ? ${hop.host})) hs))
        (map
          (
            call:
            message "noAddress" {
              hop = call.callee.name;
              host = hostLabel (hostOf call.callee);
              caller = hostLabel (hostOf call.caller);
            }
          )
          (
            filter (call: knownHost (hostOf call.callee) && addressOf (hostOf call.callee) == null) acrossHosts
          )
        )
        (map (
          hop:
          if backendsHost == null then
            message "noBackendsHost" {
              hop = hop.name;
              host = hostLabel (hostOf hop);
            }
          else
            message "noCollectorAddress" {
              hop = hop.name;
              host = hostLabel (hostOf hop);
              backends = backendsHost;
            }
        ) (if knownHost backendsHost && collectorAddress == null then exportingAfar else [ ]))
        (map (
          hop:
          message "noInterface" {
            hop = hop.name;
            host = hostLabel (hostOf hop);
          }
        ) (if interface == null then filter calledFromAfar hs else [ ]))
      ];
      # A host the other messages can talk about: unlisted ones have their own.
      knownHost = host: host == null || hosts ? ${host};

      # The first cycle of calls, as the hop names along it (first one last
      # again), or null. Depth-first from each hop; a path never exceeds the
      # number of hops without repeating one.
      cycle =
        let
          from =
            path:
            let
              current = elemAt path (length path - 1);
              # A hop calling itself has its own error above.
              callees = filter (name: name != current) (known (callsOf (indexOf current) byName.${current}));
              closing = filter (name: elem name path) callees;
            in
            if closing != [ ] then
              dropUntil (head closing) path ++ [ (head closing) ]
            else
              foldl' (found: callee: if found != null then found else from (path ++ [ callee ])) null callees;
          dropUntil = name: path: if head path == name then path else dropUntil name (builtins.tail path);
          indexes = listToAttrs (
            imap0 (i: name: {
              inherit name;
              value = i;
            }) names
          );
          indexOf = name: indexes.${name};
        in
        if duplicates names != [ ] then
          null
        else
          foldl' (found: name: if found != null then found else from [ name ]) null names;

      instance =
        i: hop:
        # The hop's settings as they are: the instance options carry the same names.
        builtins.intersectAttrs chainSchema.variables hop
        // {
          host =
            if i == 0 then
              listenAddress
            else if listensAfar hop then
              addressOf (hostOf hop)
            else
              "127.0.0.1";
          inherit (hop) port;
          externalCallUrls = map (name: hopUrl byName.${name}) (known (callsOf i hop));
          otlpEndpoint = otlpEndpoint (
            {
              protocol = otlpProtocol;
              inherit ports;
            }
            // optionalAttrs (hostOf hop != backendsHost) { address = collectorAddress; }
          );
          inherit otlpProtocol;
          traceLink = traceLink grafanaUrl;
          environment = {
            # Export every second rather than every five: spans show up while you look.
            OTEL_BSP_SCHEDULE_DELAY = "1000";
            # Metrics every 10 s rather than every 60: the dashboard's
            # one-minute rates need more than one point in their window.
            OTEL_METRIC_EXPORT_INTERVAL = "10000";
          };
        };
    in
    {
      inherit errors;

      instances = listToAttrs (
        filter (entry: entry != null) (
          imap0 (
            i: hop:
            if isLocal hop then
              {
                inherit (hop) name;
                value = instance i hop;
              }
            else
              null
          ) hs
        )
      );

      # What other machines reach here: the ports of this machine's hops
      # that a hop elsewhere calls, and whether the collector (when it is
      # here) gets spans from elsewhere.
      crossHost = {
        hopPorts = map (hop: hop.port) (filter (hop: isLocal hop && calledFromAfar hop) hs);
        collector = exportingAfar != [ ] && backendsHost == hostName;
        inherit collectorAddress;
      };

      summary = {
        # Each hop in the shape of the `chain` option (so the file is also a
        # chain description `cargo run -- --chain` can run), with `calls`
        # spelled out, plus what the hop becomes on this system.
        hops = imap0 (
          i: hop:
          # `host` only where it is set: a single machine's lab.json is as before.
          builtins.removeAttrs (builtins.intersectAttrs chainSchema.properties hop) (
            optional (hop.host == null) "host"
          )
          // {
            calls = known (callsOf i hop);
            entry = i == 0;
            serviceName = serviceName hop.name;
            unit = "${serviceName hop.name}.service";
            # Where it listens: loopback is this machine's only for its own hops.
            url = hopUrl hop;
            calledServices = map serviceName (known (callsOf i hop));
          }
        ) hs;
        ports = ports // fixedPorts;
        inherit
          listenAddress
          grafanaUrl
          otlpProtocol
          ;
        # null for an empty chain, which the lab reports as an error.
        entryUrl = if hs == [ ] then null else "http://localhost:${toString (head hs).port}/";
      };
    };
}
