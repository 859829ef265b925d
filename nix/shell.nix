# `nix develop`: the Rust toolchain of the pinned nixpkgs, nixfmt,
# `tracing-lab-local` (what `nix run .#local` runs), and on Linux the lab's
# backends so that pieces can be run by hand.
{
  lib,
  stdenv,
  callPackage,
  mkShell,
  rustPlatform,
  cargo,
  rustc,
  clippy,
  rustfmt,
  rust-analyzer,
  cargo-nextest,
  nixfmt,
  opentelemetry-collector,
  tempo,
  grafana,
}:

mkShell {
  inputsFrom = [ (callPackage ./package.nix { }) ];

  packages = [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    cargo-nextest
    nixfmt
    (callPackage ./local.nix { })
  ]
  ++ lib.optionals stdenv.hostPlatform.isLinux [
    opentelemetry-collector
    tempo
    grafana
  ];

  # rust-analyzer finds the standard library's source here.
  env.RUST_SRC_PATH = "${rustPlatform.rustLibSrc}";
}
