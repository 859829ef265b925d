# The lab as a VM for `nix run`: headless (serial console in the terminal),
# host ports bound to 127.0.0.1 only. The disk image is ./tracing-lab.qcow2 in
# the directory `nix run` is started from (NIX_DISK_IMAGE overrides it);
# delete it to start from a clean state.
{
  config,
  lib,
  modulesPath,
  pkgs,
  ...
}:
let
  cfg = config.services.tracing-lab;
  entry = lib.head cfg.chain;

  banner = ''

    Tracing lab: ${toString (lib.length cfg.chain)} chained microservices, OpenTelemetry Collector, Tempo, Prometheus, Grafana.
    Open from the host:
      the chain   http://localhost:${toString entry.port}/   (each page links its trace in Grafana)
      Grafana     http://localhost:${toString cfg.ports.grafana}/   (dashboard "Tracing lab", or Explore > Tempo)
      Tempo       http://localhost:${toString cfg.ports.tempo}/
      Prometheus  http://localhost:${toString cfg.ports.prometheus}/
    In here: systemctl status 'microservice-*' opentelemetry-collector tempo prometheus grafana
             cat /etc/tracing-lab/lab.json
    Leave with `poweroff` (or Ctrl-a x).
  '';
in
{
  imports = [
    (modulesPath + "/virtualisation/qemu-vm.nix")
    ./modules/tracing-lab
    ./forward-ports.nix
  ];

  services.tracing-lab = {
    enable = true;
    # Only this host reaches the VM: whoever opens Grafana may do everything.
    grafanaAnonymousRole = "Admin";
  };

  networking.hostName = "tracing-lab";

  virtualisation = {
    graphics = false;
    cores = 2;
    memorySize = 3072;
    diskSize = 4096;
  };

  # A lab VM reachable only from this host: log straight in and show what to open.
  services.getty = {
    autologinUser = "root";
    helpLine = banner;
  };
  users.motd = banner;

  environment.systemPackages = [
    pkgs.curl
    pkgs.jq
  ];

  system.stateVersion = "26.05";
}
