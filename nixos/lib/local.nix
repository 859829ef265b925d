# The lab as local processes, without a VM: the process-compose configuration
# of one exercise, from the same functions the NixOS modules use
# (./topology.nix, ./backends.nix). Builtins only, like those (tested in
# ../tests/eval/pure-local.nix); ../../nix/local.nix hands it the packages and files.
#
# Everything listens on 127.0.0.1 on the lab's default ports. State lives in
# the directory that the launcher exports as TRACING_LAB_STATE, known only at
# run time: the commands are shell words that leave "$TRACING_LAB_STATE" to
# the shell, Tempo and Loki expand ${TRACING_LAB_STATE} in their settings
# (-config.expand-env), and Grafana $__env{TRACING_LAB_STATE} in its own.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    head
    listToAttrs
    map
    mapAttrs
    replaceStrings
    ;

  topology = import ./topology.nix;
  backends = import ./backends.nix;
  exercises = import ./exercises.nix;
  tiers = import ./collector-tiers.nix;

  optionalAttrs = cond: attrs: if cond then attrs else { };

  # One word for the shell, taken literally.
  shellArg = arg: "'${replaceStrings [ "'" ] [ "'\\''" ] arg}'";
  # One word for the shell: `before`, the state directory, `after`.
  stateArg = before: after: "${shellArg before}\"\$${stateVar}\"${shellArg after}";
  exec = words: "exec ${concatStringsSep " " words}";

  stateVar = "TRACING_LAB_STATE";

  healthy =
    names:
    listToAttrs (
      map (name: {
        inherit name;
        value.condition = "process_healthy";
      }) names
    );

  # Ready once `path` answers 200 on 127.0.0.1:`port`; checked every 2 s.
  httpReady = port: path: {
    http_get = {
      host = "127.0.0.1";
      scheme = "http";
      inherit path port;
    };
    initial_delay_seconds = 1;
    period_seconds = 2;
    timeout_seconds = 2;
    failure_threshold = 3;
  };

  # Restarts a process that fails, a few times (a hop's configuration error,
  # exit code 2, would fail again each time).
  supervised = {
    availability = {
      restart = "on_failure";
      backoff_seconds = 2;
      max_restarts = 5;
    };
    shutdown = {
      signal = 15;
      timeout_seconds = 20;
    };
  };
in
rec {
  inherit stateVar;

  ports = topology.defaultPorts;
  listenAddress = "127.0.0.1";
  grafanaAnonymousRole = "Admin";

  # What a browser opens, as the launcher's banner lists it.
  exposedPorts = topology.exposedPorts {
    hops = topology.defaultChain;
    inherit ports;
  };

  processNames = {
    collector = "otel-collector";
    tempo = "tempo";
    loki = "loki";
    prometheus = "prometheus";
    grafana = "grafana";
    load = "load";
    hop = topology.serviceName;
  };

  # The exercise's chain wired as the modules wire it, or a throw naming the
  # exercise when it is not one.
  chain =
    exercise:
    if !(exercises.byName ? ${exercise}) then
      throw "tracing-lab: no exercise `${exercise}`; there are: ${concatStringsSep ", " exercises.names}"
    else
      let
        lab = topology.chain {
          inherit (exercises.byName.${exercise}) hops;
          inherit ports listenAddress;
        };
      in
      # Its hops would all run here, over loopback: refused, as the lab runner does.
      if exercises.byName.${exercise}.multiHost then
        let
          placed = head (filter (hop: (hop.host or null) != null) exercises.byName.${exercise}.hops);
        in
        throw "tracing-lab: exercise `${exercise}`: ${
          (import ./chain-schema.nix).message "hostOnOneMachine" {
            hop = placed.name;
            inherit (placed) host;
            runner = "the local lab";
          }
        }"
      else if lab.errors != [ ] then
        throw "tracing-lab: exercise `${exercise}`: ${concatStringsSep "; " lab.errors}"
      else
        lab;

  # With tail sampling scaled out (./collector-tiers.nix), the first tier.
  # `collectorVersion`: the version of the collector package that runs it.
  collectorSettings =
    { exercise, collectorVersion }:
    let
      ex = exercises.byName.${exercise};
    in
    tiers.receiverSettings {
      inherit ports collectorVersion;
      tailSampling = backends.exerciseTailSampling ex;
      replicas = tiers.exerciseReplicas ex;
      routingKey = tiers.exerciseRoutingKey ex;
    };

  # Prometheus' configuration file: it scrapes the collector's own metrics,
  # as in the VM; the rest arrives by remote write.
  prometheusSettings.scrape_configs = backends.prometheusScrapeConfigs;

  # The second tier's collectors of a scaled-out exercise, by process name
  # ({ } for the others): each one's ports (collector-tiers.nix's sampler).
  samplerProcesses =
    exercise:
    listToAttrs (
      map (sampler: {
        name = "otel-sampler-${toString sampler.index}";
        value = sampler;
      }) (tiers.samplers (tiers.exerciseReplicas exercises.byName.${exercise}))
    );

  # Those collectors with their settings, for the collector of `collectorVersion`:
  # { sampler; settings; } by process name.
  samplers =
    { exercise, collectorVersion }:
    mapAttrs (_: sampler: {
      inherit sampler;
      settings = tiers.samplerSettings {
        inherit ports sampler collectorVersion;
        tailSampling = backends.exerciseTailSampling exercises.byName.${exercise};
      };
    }) (samplerProcesses exercise);

  # The collector distribution (nixpkgs attribute name) the exercise needs.
  collectorPackage =
    exercise: backends.collectorPackage (backends.exerciseTailSampling exercises.byName.${exercise});

  # Tempo's settings with its state under TRACING_LAB_STATE (for
  # -config.expand-env), and for Tempo 3 its /var/tempo defaults moved there too.
  tempoSettings =
    { tempoVersion }:
    let
      stateDir = "\${${stateVar}}/tempo";
    in
    backends.tempoSettings { inherit ports listenAddress stateDir; }
    // optionalAttrs (backends.tempoWritesVarTempo tempoVersion) (
      backends.tempoVarTempoSettings { inherit stateDir; }
    );

  # Loki's settings with its state under TRACING_LAB_STATE (for -config.expand-env).
  lokiSettings = backends.lokiSettings {
    inherit ports listenAddress;
    stateDir = "\${${stateVar}}/loki";
  };

  # Grafana's settings; `pluginsDir` is the directory of its installed plugins
  # (null: none). The secret key is a file the launcher creates in Grafana's
  # state directory, its working directory: Grafana cannot nest $__env{} in
  # $__file{}, so the path is relative.
  grafanaSettings =
    { pluginsDir, provisioningDir }:
    let
      state = "$__env{${stateVar}}/grafana";
    in
    backends.grafanaSettings {
      inherit ports listenAddress;
      anonymousRole = grafanaAnonymousRole;
      secretKey = "$__file{secret_key}";
    }
    // {
      paths = {
        data = state;
        logs = "${state}/log";
        plugins = if pluginsDir == null then "${state}/plugins" else pluginsDir;
        provisioning = provisioningDir;
      };
    };

  # The process-compose configuration of one exercise. `bin`: the executables
  # (microservice, collector, tempo, loki, prometheus, grafana, vegeta,
  # bash); `files`: the configuration files made from the settings above
  # (collector, tempo, loki, prometheus, grafana, loadTargets; `samplers`, by
  # process name, for an exercise that scales tail sampling out); `grafanaHome`:
  # Grafana's share/grafana.
  processCompose =
    {
      exercise,
      bin,
      files,
      grafanaHome,
      loadRate ? backends.loadRate,
    }:
    let
      lab = chain exercise;
      hops = lab.summary.hops;
      samplerNames = attrNames (samplerProcesses exercise);
      entry = head hops;
      instanceEnv =
        hop:
        let
          instance = lab.instances.${hop.name};
        in
        topology.instanceEnvironment (instance // { inherit (hop) serviceName; });

      hopProcess = hop: {
        name = processNames.hop hop.name;
        value = supervised // {
          command = exec [ (shellArg bin.microservice) ];
          environment = map (name: "${name}=${(instanceEnv hop).${name}}") (attrNames (instanceEnv hop));
          # The collector first, so that the first spans are not refused; the
          # callees before their callers, so that the first page is whole.
          depends_on = healthy ([ processNames.collector ] ++ map processNames.hop hop.calls);
          readiness_probe = httpReady hop.port "/readyz";
        };
      };
    in
    {
      version = "0.5";
      # The commands are shell words: bash expands "$TRACING_LAB_STATE", not
      # process-compose, which would also take Grafana's and Tempo's `$`s.
      disable_env_expansion = true;
      shell = {
        shell_command = bin.bash;
        shell_argument = "-c";
      };

      processes = listToAttrs (
        [
          {
            name = processNames.prometheus;
            value = supervised // {
              command = exec (
                [
                  (shellArg bin.prometheus)
                  (shellArg "--config.file=${files.prometheus}")
                  (shellArg "--web.listen-address=${listenAddress}:${toString ports.prometheus}")
                  (stateArg "--storage.tsdb.path=" "/prometheus")
                ]
                ++ map shellArg backends.prometheusFlags
              );
              readiness_probe = httpReady ports.prometheus "/-/ready";
            };
          }
          {
            name = processNames.tempo;
            value = supervised // {
              command = exec [
                (shellArg bin.tempo)
                (shellArg "-config.file=${files.tempo}")
                (shellArg "-config.expand-env=true")
              ];
              # Its metrics-generator writes to Prometheus.
              depends_on = healthy [ processNames.prometheus ];
              readiness_probe = httpReady ports.tempo "/ready";
            };
          }
          {
            name = processNames.loki;
            value = supervised // {
              command = exec [
                (shellArg bin.loki)
                (shellArg "-config.file=${files.loki}")
                (shellArg "-config.expand-env=true")
              ];
              readiness_probe = httpReady ports.loki "/ready";
            };
          }
          {
            name = processNames.collector;
            value = supervised // {
              command = exec [
                (shellArg bin.collector)
                (shellArg "--config=${files.collector}")
              ];
              # Where it sends traces and logs (metrics: Prometheus, before Tempo).
              depends_on = healthy (
                [
                  processNames.tempo
                  processNames.loki
                ]
                ++ samplerNames
              );
              # The core distribution has no health_check extension; its own
              # metrics answer once it runs.
              readiness_probe = httpReady topology.fixedPorts.collectorTelemetry "/metrics";
            };
          }
          {
            name = processNames.grafana;
            value = supervised // {
              command = concatStringsSep " && " [
                "cd \"\$${stateVar}/grafana\""
                (exec [
                  (shellArg bin.grafana)
                  "server"
                  "-homepath"
                  (shellArg grafanaHome)
                  "-config"
                  (shellArg files.grafana)
                ])
              ];
              depends_on = healthy [
                processNames.prometheus
                processNames.tempo
                processNames.loki
              ];
              readiness_probe = httpReady ports.grafana "/api/health";
            };
          }
          {
            name = processNames.load;
            value = supervised // {
              command = exec (
                [ (shellArg bin.vegeta) ]
                ++ map shellArg (
                  backends.loadAttackArgs {
                    rate = loadRate;
                    targetsFile = files.loadTargets;
                  }
                )
              );
              depends_on = healthy [ (processNames.hop entry.name) ];
            };
          }
        ]
        ++ map hopProcess hops
        ++ map (name: {
          inherit name;
          value = supervised // {
            command = exec [
              (shellArg bin.collector)
              (shellArg "--config=${files.samplers.${name}}")
            ];
            depends_on = healthy [ processNames.tempo ];
            readiness_probe = httpReady (samplerProcesses exercise).${name}.telemetry "/metrics";
          };
        }) samplerNames
      );
    };
}
