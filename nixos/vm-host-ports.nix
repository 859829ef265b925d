# Host ports of the `nix run` VM. Its app (system.build.tracingLabVm) forwards
# each port a browser opens from the host's 127.0.0.1, moved by
# TRACING_LAB_PORT_OFFSET, after checking that each is free. It passes the
# offset on the kernel command line; a unit in the VM derives from it what must
# name host ports: the pages' trace links, Grafana's root URL and the banner.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  topology = import ./lib/topology.nix;
  exercises = import ./lib/exercises.nix;
  cfg = config.services.tracing-lab;

  exposedPorts = topology.exposedPorts {
    hops = cfg.chain;
    inherit (cfg) ports;
  };
  highestPort = lib.foldl' lib.max 0 (map (exposed: exposed.port) exposedPorts);
  maxOffset = 65535 - highestPort;
  # A whole number without leading zeros (bash would read those as octal).
  offsetPattern = "^(0|[1-9][0-9]{0,4})$";
  offsetParameter = "tracing_lab.port_offset";
  runtimeDir = "/run/tracing-lab";

  # "<guest port> <what>" lines for the scripts below.
  portLine = exposed: "${toString exposed.port} ${exposed.what}\n";
  portTable = lib.concatMapStrings portLine exposedPorts;

  vm = config.system.build.vm;
  runVm = "${vm}/bin/run-${config.system.name}-vm";

  app = pkgs.writeShellApplication {
    name = "tracing-lab-vm";
    text = ''
      offset=''${TRACING_LAB_PORT_OFFSET:-0}
      if ! [[ $offset =~ ${offsetPattern} ]] || ((offset > ${toString maxOffset})); then
        echo "tracing-lab: TRACING_LAB_PORT_OFFSET=$offset: expected a whole number from 0 to ${toString maxOffset}, added to every host port" >&2
        exit 2
      fi

      forwards=()
      taken=()
      urls=()
      while read -r guest what; do
        host=$((guest + offset))
        # Something accepts connections there: QEMU could not listen on it.
        if (: <"/dev/tcp/127.0.0.1/$host") 2>/dev/null; then
          taken+=("$host ($what)")
        fi
        forwards+=("hostfwd=tcp:127.0.0.1:$host-:$guest")
        urls+=("$(printf '  %-11s http://localhost:%s/' "$what" "$host")")
      done <<'EOF'
      ${portTable}EOF

      if ((''${#taken[@]} > 0)); then
        echo "tracing-lab: these ports of 127.0.0.1 are in use, so the VM cannot forward them:" >&2
        printf '  %s\n' "''${taken[@]}" >&2
        echo "Stop what uses them, or move every host port by the same offset, for example:" >&2
        echo "  TRACING_LAB_PORT_OFFSET=10000 nix run" >&2
        exit 1
      fi

      QEMU_NET_OPTS="$(IFS=,; echo "''${forwards[*]}")''${QEMU_NET_OPTS:+,$QEMU_NET_OPTS}"
      QEMU_KERNEL_PARAMS="${offsetParameter}=$offset''${QEMU_KERNEL_PARAMS:+ $QEMU_KERNEL_PARAMS}"
      export QEMU_NET_OPTS QEMU_KERNEL_PARAMS

      echo "tracing-lab: booting; from this host open"
      printf '%s\n' "''${urls[@]}"
      exec ${runVm} "$@"
    '';
    passthru.forwardedPorts = map (exposed: exposed.port) exposedPorts;
    meta.description = "Boot the tracing lab VM in this terminal";
  };

  hostPortsService = "tracing-lab-host-ports.service";
  usesHostPorts = envFile: {
    wants = [ hostPortsService ];
    after = [ hostPortsService ];
    # Read after Environment=, so these values win; "-": missing is fine.
    serviceConfig.EnvironmentFile = "-${runtimeDir}/${envFile}";
  };
in
{
  imports = [ ./host-reachable.nix ];

  system.build.tracingLabVm = app;

  systemd.services = {
    tracing-lab-host-ports = {
      description = "Host ports of the tracing lab VM, from the offset its app passed";
      wantedBy = [ "multi-user.target" ];
      # Before the serial console logs in, so that the banner is there.
      wants = [ "getty-pre.target" ];
      before = [ "getty-pre.target" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        RuntimeDirectory = "tracing-lab";
      };
      script = ''
        offset=0
        for word in $(</proc/cmdline); do
          case $word in
            ${offsetParameter}=*) offset=''${word#*=} ;;
          esac
        done
        if ! [[ $offset =~ ${offsetPattern} ]] || ((offset > ${toString maxOffset})); then
          echo "ignoring ${offsetParameter}=$offset: not a whole number from 0 to ${toString maxOffset}" >&2
          offset=0
        fi

        grafana_url="http://localhost:$((${toString cfg.ports.grafana} + offset))"
        link=${lib.escapeShellArg (topology.traceLink "@GRAFANA_URL@")}
        printf "TRACE_LINK='%s'\n" "''${link//@GRAFANA_URL@/"$grafana_url"}" >${runtimeDir}/hops.env
        printf "GF_SERVER_ROOT_URL='%s/'\n" "$grafana_url" >${runtimeDir}/grafana.env

        {
          echo
          echo "Tracing lab: ${toString (lib.length cfg.chain)} chained microservices, OpenTelemetry Collector, Tempo, Prometheus, Grafana."
          echo "Open from the host:"
          while read -r guest what; do
            printf '  %-11s http://localhost:%s/\n' "$what" "$((guest + offset))"
          done <<'EOF'
        ${portTable}EOF
          echo "Each page links its trace in Grafana (dashboard \"Tracing lab\", or Explore > Tempo)."
          printf '%s\n' ${lib.escapeShellArg "Running the exercise ${cfg.exercise} (${exercises.byName.${cfg.exercise}.title}). `lab-exercise` lists the others, `lab-exercise NAME` switches."}
          echo "In here: systemctl status 'microservice-*' opentelemetry-collector tempo prometheus grafana"
          echo "         cat /etc/tracing-lab/lab.json"
          echo "Leave with \`poweroff\` (or Ctrl-a x)."
          echo
        } >${runtimeDir}/motd
      '';
    };

    grafana = usesHostPorts "grafana.env";
  }
  // lib.listToAttrs (
    map (hop: lib.nameValuePair (topology.serviceName hop.name) (usesHostPorts "hops.env")) cfg.chain
  );

  # Shown once, when the console logs in.
  users.motdFile = "${runtimeDir}/motd";
}
