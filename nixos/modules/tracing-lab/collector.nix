{ config, lib, ... }:
let
  cfg = config.services.tracing-lab;
in
{
  config = lib.mkIf cfg.enable {
    # Core distribution: otlp receiver, memory_limiter and batch processors,
    # otlp exporter. `otlp` is the exporter's name before and after its rename
    # to `otlp_grpc` (kept as an alias), so this works with either collector.
    services.opentelemetry-collector = {
      enable = true;
      settings = {
        receivers.otlp.protocols = {
          grpc.endpoint = "127.0.0.1:${toString cfg.ports.collectorOtlpGrpc}";
          http.endpoint = "127.0.0.1:${toString cfg.ports.collectorOtlpHttp}";
        };
        processors = {
          memory_limiter = {
            check_interval = "1s";
            limit_mib = 256;
            spike_limit_mib = 64;
          };
          batch.timeout = "1s";
        };
        exporters.otlp = {
          endpoint = "127.0.0.1:${toString cfg.ports.tempoOtlpGrpc}";
          tls.insecure = true;
        };
        service.pipelines.traces = {
          receivers = [ "otlp" ];
          processors = [
            "memory_limiter"
            "batch"
          ];
          exporters = [ "otlp" ];
        };
      };
    };
  };
}
