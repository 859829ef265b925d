# Makes the lab's UIs reachable from the host running the VM: the entry hop,
# Grafana, Tempo and Prometheus, each on the same port of 127.0.0.1 only.
{ config, lib, ... }:
let
  cfg = config.services.tracing-lab;
  forward = port: {
    from = "host";
    host = {
      address = "127.0.0.1";
      inherit port;
    };
    guest.port = port;
  };
in
{
  services.tracing-lab.openFirewall = true;

  virtualisation.forwardPorts = map forward [
    (lib.head cfg.chain).port
    cfg.ports.grafana
    cfg.ports.tempo
    cfg.ports.prometheus
  ];
}
