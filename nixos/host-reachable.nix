# Lets the host reach the lab through QEMU's user networking. Forwarded
# connections arrive on the VM's network interface, not on its loopback, so
# what a browser opens listens on all of the VM's interfaces, with the VM's
# firewall open for it; the host side of each forward stays on 127.0.0.1.
{
  services.tracing-lab = {
    listenAddress = "0.0.0.0";
    openFirewall = true;
  };
}
