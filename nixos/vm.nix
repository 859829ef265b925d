# The lab as a VM for `nix run`: headless (serial console in the terminal),
# host ports bound to 127.0.0.1 only (./vm-host-ports.nix). The disk image is
# ./tracing-lab.qcow2 in the directory `nix run` is started from
# (NIX_DISK_IMAGE overrides it); delete it to start from a clean state.
{ modulesPath, pkgs, ... }:
{
  imports = [
    (modulesPath + "/virtualisation/qemu-vm.nix")
    ./modules/tracing-lab
    ./vm-host-ports.nix
  ];

  services.tracing-lab = {
    enable = true;
    # Only this host reaches the VM: whoever opens Grafana may do everything.
    grafanaAnonymousRole = "Admin";
    # `lab-exercise <name>` switches between the exercises without a reboot.
    specialisations.enable = true;
  };

  networking.hostName = "tracing-lab";

  virtualisation = {
    graphics = false;
    cores = 2;
    memorySize = 3072;
    diskSize = 4096;
  };

  # Log straight in; the banner of ./vm-host-ports.nix says what to open.
  services.getty.autologinUser = "root";

  environment.systemPackages = [
    pkgs.curl
    pkgs.jq
  ];

  system.stateVersion = "26.05";
}
