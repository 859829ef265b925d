# `nix run .#local`: the whole lab as local processes under process-compose,
# on Linux or macOS, no VM. What runs, with which settings, comes from
# ../nixos/lib/local.nix (the functions the NixOS modules use); this file
# turns it into files and the launcher `tracing-lab-local`, which picks an
# exercise, prepares the state directory and starts process-compose.
{
  lib,
  pkgs,
  callPackage,
  formats,
  linkFarm,
  runCommand,
  runCommandLocal,
  writeText,
  writeShellApplication,
}:
let
  local = import ../nixos/lib/local.nix;
  backends = import ../nixos/lib/backends.nix;
  exercises = import ../nixos/lib/exercises.nix;

  # JSON is YAML: process-compose, Tempo, Prometheus and the collector read it.
  json = formats.json { };
  microservice = callPackage ./package.nix { };

  plugins = backends.grafanaPluginChoice {
    grafanaVersion = pkgs.grafana.version;
    packaged = name: pkgs.grafanaPlugins ? ${name};
  };
  # As services.grafana.declarativePlugins lays them out.
  pluginsDir =
    if plugins.install == [ ] then
      null
    else
      linkFarm "tracing-lab-grafana-plugins" (
        map (name: {
          name = pkgs.grafanaPlugins.${name}.pname;
          path = pkgs.grafanaPlugins.${name};
        }) plugins.install
      );

  provisioning = backends.grafanaProvisioning {
    inherit (local) ports;
    dashboardsPath = ../nixos/modules/tracing-lab/dashboards;
  };
  provisioningDir = runCommand "tracing-lab-grafana-provisioning" { } ''
    mkdir -p $out/{alerting,datasources,dashboards,plugins}
    ln -s ${json.generate "datasources.yaml" provisioning.datasources} $out/datasources/tracing-lab.yaml
    ln -s ${json.generate "dashboards.yaml" provisioning.dashboards} $out/dashboards/tracing-lab.yaml
  '';

  settings = {
    tempo = local.tempoSettings { tempoVersion = pkgs.tempo.version; };
    loki = local.lokiSettings;
    # Like the module's assertion: name each plugin this Grafana needs and nixpkgs lacks.
    grafana =
      lib.throwIf (plugins.missing != [ ])
        "tracing-lab-local: ${lib.concatStringsSep " " plugins.missing}"
        (local.grafanaSettings { inherit pluginsDir provisioningDir; });
    prometheus = local.prometheusSettings;
    collector = lib.genAttrs exercises.names (
      exercise:
      local.collectorSettings {
        inherit exercise;
        collectorVersion = (collectorPackage exercise).version;
      }
    );
    samplers = lib.genAttrs exercises.names (
      exercise:
      lib.mapAttrs (_: sampler: sampler.settings) (
        local.samplers {
          inherit exercise;
          collectorVersion = (collectorPackage exercise).version;
        }
      )
    );
  };

  collectorPackage = exercise: pkgs.${local.collectorPackage exercise};
  # `otelcol validate` checks each file at build time, as the module has it done.
  collectorConfig =
    exercise: name: value:
    runCommandLocal "tracing-lab-${name}-${exercise}.yaml"
      { generated = json.generate "${name}-${exercise}.yaml" value; }
      ''
        cp $generated $out
        ${lib.getExe (collectorPackage exercise)} validate --config=file:$out
      '';

  # The configuration files, by exercise.
  files = lib.genAttrs exercises.names (exercise: {
    collector = "file:${collectorConfig exercise "otelcol" settings.collector.${exercise}}";
    samplers = lib.mapAttrs (
      name: value: "file:${collectorConfig exercise name value}"
    ) settings.samplers.${exercise};
    tempo = "${json.generate "tempo.yaml" settings.tempo}";
    loki = "${json.generate "loki.yaml" settings.loki}";
    prometheus = "${json.generate "prometheus.yml" settings.prometheus}";
    grafana = "${(formats.ini { }).generate "grafana.ini" settings.grafana}";
    loadTargets = "${writeText "tracing-lab-load-targets" (
      backends.loadTargets (lib.head (local.chain exercise).summary.hops).port
    )}";
  });

  bin = exercise: {
    microservice = lib.getExe microservice;
    collector = lib.getExe (collectorPackage exercise);
    tempo = lib.getExe' pkgs.tempo "tempo";
    loki = lib.getExe' pkgs.grafana-loki "loki";
    prometheus = lib.getExe pkgs.prometheus;
    grafana = lib.getExe pkgs.grafana;
    vegeta = lib.getExe pkgs.vegeta;
    bash = lib.getExe pkgs.bash;
  };

  processCompose = lib.genAttrs exercises.names (
    exercise:
    local.processCompose {
      inherit exercise;
      bin = bin exercise;
      files = files.${exercise};
      grafanaHome = "${pkgs.grafana}/share/grafana";
    }
  );

  # Per exercise: its process-compose configuration, and "<port> <who>" for
  # every port it listens on, which the launcher checks are free.
  configDir = linkFarm "tracing-lab-local-configs" (
    lib.concatMap (exercise: [
      {
        name = "${exercise}.json";
        path = json.generate "process-compose-${exercise}.json" processCompose.${exercise};
      }
      {
        name = "${exercise}.ports";
        path = writeText "tracing-lab-${exercise}-ports" (
          let
            summary = (local.chain exercise).summary;
          in
          lib.concatMapStrings (hop: "${toString hop.port} ${hop.serviceName}\n") summary.hops
          + lib.concatStrings (lib.mapAttrsToList (name: port: "${toString port} ${name}\n") summary.ports)
          + lib.concatStrings (
            lib.mapAttrsToList (
              name: sampler: "${toString sampler.otlpGrpc} ${name}\n${toString sampler.telemetry} ${name}\n"
            ) (local.samplerProcesses exercise)
          )
        );
      }
    ]) exercises.names
  );

  table = lib.concatMapStrings (
    name: "${name}\t${exercises.byName.${name}.summary}\n"
  ) exercises.names;
  urls = lib.concatMapStrings (
    exposed: "  ${exposed.what}: http://localhost:${toString exposed.port}/\n"
  ) local.exposedPorts;
in
writeShellApplication {
  name = "tracing-lab-local";
  runtimeInputs = [
    pkgs.coreutils
    pkgs.process-compose
  ];
  text = ''
    usage() {
      cat <<'EOF'
    usage: tracing-lab-local [--exercise NAME] [PROCESS-COMPOSE FLAGS...]
           tracing-lab-local --list-exercises

    Runs the tracing lab as local processes under process-compose: the chain of
    microservices, the OpenTelemetry Collector, Tempo, Loki, Prometheus and Grafana, on
    127.0.0.1. State: $XDG_STATE_HOME/tracing-lab (~/.local/state/tracing-lab).

      --exercise NAME     the exercise to run (default: baseline)
      --list-exercises    list them
      -t=false            (process-compose) no TUI: the processes' logs on stdout
    EOF
    }

    list() {
      while IFS=$'\t' read -r name summary; do
        printf '  %-22s %s\n' "$name" "$summary"
      done <<'EOF'
    ${table}EOF
    }

    exercise=baseline
    pc_args=()
    while (($# > 0)); do
      case $1 in
        --exercise)
          if (($# < 2)); then
            echo "tracing-lab: --exercise needs a NAME; there are:" >&2
            list >&2
            exit 2
          fi
          exercise=$2
          shift 2
          ;;
        --exercise=*)
          exercise=''${1#*=}
          shift
          ;;
        --list-exercises)
          list
          exit 0
          ;;
        -h | --help)
          usage
          exit 0
          ;;
        *)
          pc_args+=("$1")
          shift
          ;;
      esac
    done

    config=${configDir}/$exercise.json
    if [[ $exercise == */* || $exercise == .* || ! -e $config ]]; then
      echo "tracing-lab: no exercise \`$exercise'; there are:" >&2
      list >&2
      exit 2
    fi

    taken=()
    while read -r port who; do
      # Something accepts connections there already.
      if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        taken+=("$port ($who)")
      fi
    done <${configDir}/"$exercise".ports
    if ((''${#taken[@]} > 0)); then
      echo "tracing-lab: these ports of 127.0.0.1 are in use (is the lab running already?):" >&2
      printf '  %s\n' "''${taken[@]}" >&2
      exit 1
    fi

    state=''${XDG_STATE_HOME:-$HOME/.local/state}/tracing-lab
    mkdir -p "$state"/{tempo,loki,prometheus,grafana}
    # Grafana's secret key: made here on first start, never in the Nix store.
    if [[ ! -s $state/grafana/secret_key ]]; then
      (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$state/grafana/secret_key")
    fi
    # Left by a run that was killed; the ports above are free, so it is stale.
    rm -f "$state/process-compose.sock"

    echo "tracing-lab: exercise $exercise; open"
    printf '%s' ${lib.escapeShellArg urls}
    echo "Grafana lets you in as Admin without a login. State: $state"
    echo "Stop with Ctrl-C (F10 in the TUI), or SIGTERM to process-compose."

    export ${local.stateVar}=$state
    exec process-compose \
      --config "$config" \
      --unix-socket "$state/process-compose.sock" \
      --log-file "$state/process-compose.log" \
      --ordered-shutdown \
      "''${pc_args[@]}"
  '';
  # What ../nixos/tests/eval/local.nix and ../tests/runtime/local_lab.py read.
  passthru = {
    inherit
      processCompose
      settings
      files
      provisioning
      ;
    grafanaPlugins = plugins.install;
  };
  meta = {
    description = "Run the tracing lab as local processes under process-compose";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
