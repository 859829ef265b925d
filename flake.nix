{
  description = "A reproducible distributed-tracing lab: chained Rust microservices, OpenTelemetry Collector, Tempo, Prometheus and Grafana";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      linuxSystems = lib.filter (lib.hasSuffix "-linux") systems;
      forSystems = names: f: lib.genAttrs names (system: f nixpkgs.legacyPackages.${system});
      forAllSystems = forSystems systems;
      forLinuxSystems = forSystems linuxSystems;

      # The lab VM of `nix run`, for the host's own architecture.
      labVm =
        system:
        lib.nixosSystem {
          modules = [
            ./nixos/vm.nix
            { nixpkgs.hostPlatform = system; }
          ];
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          microservice = pkgs.callPackage ./nix/package.nix { };
        in
        {
          inherit microservice;
          default = microservice;
          lab-local = pkgs.callPackage ./nix/local.nix { };
        }
      );

      nixosModules = {
        microservice = ./nixos/modules/microservice.nix;
        lab = ./nixos/modules/tracing-lab;
        default = self.nixosModules.lab;
      };

      nixosConfigurations.lab = labVm "x86_64-linux";

      apps =
        lib.recursiveUpdate
          (forAllSystems (pkgs: {
            local = {
              type = "app";
              program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.lab-local;
              meta.description = "Run the tracing lab as local processes, without a VM";
            };
          }))
          (
            forLinuxSystems (
              pkgs:
              let
                inherit (pkgs.stdenv.hostPlatform) system;
                inherit (labVm system) config;
              in
              {
                default = {
                  type = "app";
                  program = lib.getExe config.system.build.tracingLabVm;
                  meta.description = "Boot the tracing lab VM in this terminal";
                };
                test-interactive = {
                  type = "app";
                  program = lib.getExe self.checks.${system}.lab.driverInteractive;
                  meta.description = "The lab's VM test in the interactive test driver";
                };
                lab-multi-host = {
                  type = "app";
                  program = lib.getExe self.checks.${system}.lab-multi-host.driverInteractive;
                  meta.description = "The lab over four machines in the interactive test driver";
                };
              }
            )
          );

      checks = forLinuxSystems (
        pkgs:
        import ./nix/checks.nix {
          inherit pkgs;
          inherit (lib) nixosSystem;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/shell.nix { };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
