# Makes the lab's UIs reachable from the host running the VM: each port a
# browser opens, on the same port of the host's 127.0.0.1.
{ config, ... }:
let
  topology = import ./lib/topology.nix;
  cfg = config.services.tracing-lab;
  exposedPorts = topology.exposedPorts {
    hops = cfg.chain;
    inherit (cfg) ports;
  };
in
{
  imports = [ ./host-reachable.nix ];

  virtualisation.forwardPorts = map (exposed: {
    from = "host";
    host = {
      address = "127.0.0.1";
      inherit (exposed) port;
    };
    guest.port = exposed.port;
  }) exposedPorts;
}
