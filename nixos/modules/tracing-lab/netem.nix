# The `network` exercise's broken link (exercises/network.json `netem`): on
# the machine of the hop it names, `tc netem` delays and drops the packets
# that leave through the lab's interface. `systemctl stop tracing-lab-netem`
# takes it away again. Multi-host only: on one machine the hops talk over
# loopback, which this leaves alone.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  exercises = import ../../lib/exercises.nix;
  topology = import ../../lib/topology.nix;
  cfg = config.services.tracing-lab;
  inherit (exercises.byName.${cfg.exercise}) netem;
  here = netem != null && (topology.chainOf cfg).instances ? ${netem.hop};
  tc = lib.getExe' pkgs.iproute2 "tc";
in
{
  config = lib.mkIf (cfg.enable && here && cfg.interface != null) {
    systemd.services.tracing-lab-netem = {
      description = "The network exercise's latency and loss on ${cfg.interface}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${tc} qdisc replace dev ${cfg.interface} root ${netem.qdisc}";
        ExecStop = "${tc} qdisc del dev ${cfg.interface} root";
      };
    };
  };
}
