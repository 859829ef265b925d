{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.tracing-lab;
  # services.tempo runs pkgs.tempo with DynamicUser and StateDirectory=tempo.
  stateDir = "/var/lib/tempo";
  isTempo3 = lib.versionAtLeast pkgs.tempo.version "3";
in
{
  config = lib.mkIf cfg.enable {
    # Monolithic Tempo. Only blocks that Tempo 2.10 and 3.x both accept: no
    # ingester/compactor (gone in 3.0), no live_store (new in 3.0), no
    # local-blocks processor (removed in 3.0). Tempo rejects unknown keys.
    services.tempo = {
      enable = true;
      settings = {
        stream_over_http_enabled = true;
        server = {
          http_listen_address = cfg.listenAddress;
          http_listen_port = cfg.ports.tempo;
        };
        distributor.receivers.otlp.protocols = {
          grpc.endpoint = "127.0.0.1:${toString cfg.ports.tempoOtlpGrpc}";
          http.endpoint = "127.0.0.1:${toString cfg.ports.tempoOtlpHttp}";
        };
        metrics_generator = {
          registry.external_labels.source = "tempo";
          storage = {
            path = "${stateDir}/generator/wal";
            remote_write = [
              {
                url = "http://127.0.0.1:${toString cfg.ports.prometheus}/api/v1/write";
                send_exemplars = true;
              }
            ];
          };
        };
        storage.trace = {
          backend = "local";
          wal.path = "${stateDir}/wal";
          local.path = "${stateDir}/blocks";
        };
        overrides.defaults.metrics_generator.processors = [
          "service-graphs"
          "span-metrics"
        ];
        # The lab runs offline.
        usage_report.reporting_enabled = false;
      };
    };

    # Tempo 3 keeps state under built-in /var/tempo defaults (live-store WAL
    # and shutdown marker, backend-scheduler work dir), while the service may
    # only write its state directory. Mapping the whole default tree there
    # also covers defaults not found in the 3.x sources that were read.
    systemd.services.tempo.serviceConfig.BindPaths = lib.mkIf isTempo3 [ "${stateDir}:/var/tempo" ];
  };
}
