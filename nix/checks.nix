# `nix flake check` on Linux: the lab VM test, the package with its tests,
# clippy, rustfmt and nixfmt, and the evaluation tests of the NixOS modules.
{ pkgs, nixosSystem }:
let
  inherit (pkgs) lib;
  microservice = pkgs.callPackage ./package.nix { };

  # Runs `cargo <args>` with `tool` over the package's source and vendored
  # crates. Plain cargo: the package's cargo-auditable wrapper only matters for builds.
  cargoCheck =
    tool: args:
    microservice.overrideAttrs (old: {
      name = "microservice-${tool.pname}-${old.version}";
      nativeBuildInputs = old.nativeBuildInputs ++ [ tool ];
      buildPhase = ''
        runHook preBuild
        ${lib.getExe' pkgs.cargo "cargo"} ${args}
        runHook postBuild
      '';
      installPhase = "touch $out";
      doCheck = false;
    });
in
{
  lab = import ../nixos/tests/lab.nix { inherit pkgs; };

  # The lab over four machines (docs/multi-host.md).
  lab-multi-host = import ../nixos/tests/lab-multi-host.nix { inherit pkgs; };

  eval-wiring = import ../nixos/tests/eval/wiring.nix { inherit pkgs nixosSystem; };

  eval-versions = import ../nixos/tests/eval/versions.nix { inherit pkgs nixosSystem; };

  eval-local = import ../nixos/tests/eval/local.nix { inherit pkgs; };

  eval-collector-tiers = import ../nixos/tests/eval/collector-tiers.nix { inherit pkgs nixosSystem; };

  # The pure eval tests (no nixpkgs needed, also run by .ci/nix-checks): the
  # chain corpus, the wiring logic, the backends' settings, the local lab.
  eval-pure =
    assert lib.all import [
      ../nixos/tests/eval/pure-chains.nix
      ../nixos/tests/eval/pure-topology.nix
      ../nixos/tests/eval/pure-backends.nix
      ../nixos/tests/eval/pure-local.nix
      ../nixos/tests/eval/pure-collector-tiers.nix
    ];
    pkgs.writeText "eval-pure" "Every pure eval test held when this check was evaluated.\n";

  inherit microservice;

  clippy = cargoCheck pkgs.clippy "clippy --offline --workspace --all-targets -- -D warnings";

  rustfmt = cargoCheck pkgs.rustfmt "fmt --all --check";

  nixfmt =
    pkgs.runCommand "nixfmt-check"
      {
        nativeBuildInputs = [ pkgs.nixfmt ];
        src = lib.fileset.toSource {
          root = ../.;
          fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
        };
      }
      ''
        find $src -name '*.nix' -exec nixfmt --check {} +
        touch $out
      '';
}
