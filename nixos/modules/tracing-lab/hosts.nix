# The lab spread over machines (docs/multi-host.md): each machine imports the
# module with the same chain and `hosts`, and says which host it is. Only its
# own hops run there; a call to a hop elsewhere goes to that host's address,
# and spans go to the collector on `backendsHost`, which runs the backends.
# The firewall opens, on `interface` only, the ports another machine calls.
# With none of this set, the lab is one machine, as it always was.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;

  topology = import ../../lib/topology.nix;
  cfg = config.services.tracing-lab;
  lab = topology.chainOf cfg;

  hostNames = lib.attrNames cfg.hosts;
  unlisted =
    option: value:
    lib.optional (value != null && !(cfg.hosts ? ${value}))
      "services.tracing-lab.${option}: `${value}` is not one of services.tracing-lab.hosts (${lib.concatStringsSep ", " hostNames})";

  # Spread over machines, but this one does not say which it is: it would
  # run nothing, silently.
  placed = lib.filter (hop: hop.host != null) cfg.chain;
  nameless =
    lib.optional (cfg.hostName == null && (cfg.backendsHost != null || placed != [ ]))
      "services.tracing-lab.hostName: not set, but the lab is spread over machines (${
        if placed != [ ] then
          "hop `${(lib.head placed).name}` runs on host `${(lib.head placed).host}`"
        else
          "services.tracing-lab.backendsHost is `${cfg.backendsHost}`"
      }): say which of services.tracing-lab.hosts this machine is";

  collectorPort = topology.collectorPort {
    protocol = cfg.otlpProtocol;
    inherit (cfg) ports;
  };
  # The receiver of the protocol the hops use, on the address they send to.
  receiver = if cfg.otlpProtocol == "grpc" then "grpc" else "http";
  openPorts = lab.crossHost.hopPorts ++ lib.optional lab.crossHost.collector collectorPort;
in
{
  imports = [ ./netem.nix ];

  options.services.tracing-lab = {
    hostName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "hop2";
      description = ''
        Which of {option}`services.tracing-lab.hosts` this machine is: only the
        hops whose `host` it is run here. `null`: the machine of the hops
        without a `host`, which is the only one when no hop names a host.
      '';
    };

    hosts = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.address = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "192.168.1.3";
            description = ''
              How the other machines reach this one. Hops called from
              another machine listen on it, so it must be this machine's
              own address on {option}`services.tracing-lab.interface`.
            '';
          };
        }
      );
      default = { };
      example = lib.literalExpression ''
        {
          backends.address = "192.168.1.1";
          hop2.address = "192.168.1.3";
        }
      '';
      description = ''
        The machines of a lab spread over several, by the names the hops'
        `host` use. Every machine of the lab sets the same.
      '';
    };

    backendsHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "backends";
      description = ''
        The machine of {option}`services.tracing-lab.hosts` that runs the
        collector, Tempo, Prometheus and Grafana, and the hops without a
        `host`. `null`: the machine whose
        {option}`services.tracing-lab.hostName` is `null`.
      '';
    };

    interface = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "eth1";
      description = ''
        The network interface the machines of the lab reach each other on.
        The ports that other machines call (a hop's, the collector's) are
        opened on it only. `null`: the lab is one machine.
      '';
    };

    runsBackends = mkOption {
      type = types.bool;
      internal = true;
      readOnly = true;
      default = cfg.hostName == cfg.backendsHost;
      description = "Whether this machine runs the collector, Tempo, Prometheus and Grafana.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = map (message: {
          assertion = false;
          inherit message;
        }) (unlisted "hostName" cfg.hostName ++ unlisted "backendsHost" cfg.backendsHost ++ nameless);
      }

      # The collector takes spans from the other machines on its address there.
      (lib.mkIf (cfg.runsBackends && lab.crossHost.collector && lab.crossHost.collectorAddress != null) {
        services.opentelemetry-collector.settings.receivers.otlp.protocols.${receiver}.endpoint =
          lib.mkForce "${lab.crossHost.collectorAddress}:${toString collectorPort}";
      })

      (lib.mkIf (cfg.interface != null && openPorts != [ ]) {
        networking.firewall.interfaces.${cfg.interface}.allowedTCPPorts = openPorts;
      })

      # The steady load goes to the entry hop over loopback: only where it runs.
      (lib.mkIf (cfg.chain != [ ] && !(lab.instances ? ${(lib.head cfg.chain).name})) {
        services.tracing-lab.load.enable = lib.mkDefault false;
      })
    ]
  );
}
