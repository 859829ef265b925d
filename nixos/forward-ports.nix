# The interactive test driver's forwards (`nix run .#test-interactive`): each
# port a browser opens, on the same port of the host's 127.0.0.1. The `nix run`
# VM forwards the same ports through its app instead (./vm-host-ports.nix).
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
