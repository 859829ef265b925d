{ config, lib, ... }:
let
  cfg = config.services.tracing-lab;
in
{
  config = lib.mkIf cfg.enable {
    # Nothing is scraped: Tempo's metrics-generator writes service-graph and
    # span metrics through the remote-write receiver.
    services.prometheus = {
      enable = true;
      inherit (cfg) listenAddress;
      port = cfg.ports.prometheus;
      extraFlags = [
        "--web.enable-remote-write-receiver"
        # Keeps the trace ids Tempo attaches, so Grafana can jump from a latency spike to a trace.
        "--enable-feature=exemplar-storage"
      ];
    };
  };
}
