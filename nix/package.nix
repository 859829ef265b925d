{ lib, rustPlatform }:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  # A field of [package], or of [workspace.package] when the crate inherits it.
  packageField =
    name:
    let
      value = cargoToml.package.${name};
    in
    if lib.isAttrs value then cargoToml.workspace.package.${name} else value;
in
rustPlatform.buildRustPackage {
  pname = "microservice";
  version = packageField "version";

  # The lab crate (runner, benchmark) is not shipped, but cargo needs every workspace member to read the workspace.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../templates
      ../tests
      ../lab
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "microservice"
  ];
  cargoTestFlags = [
    "--package"
    "microservice"
  ];

  # The binary's default templates directory, read at compile time (option_env!).
  env.MICROSERVICE_TEMPLATES_DIR = "${placeholder "out"}/share/microservice/templates";

  postInstall = ''
    mkdir -p $out/share/microservice/templates
    cp templates/* $out/share/microservice/templates/
  '';

  # As `cargo test` runs them: the release profile's fat LTO would make every
  # test binary slow to link, and they test behaviour, not speed.
  checkType = "debug";

  # The tests start real servers on 127.0.0.1.
  __darwinAllowLocalNetworking = true;

  meta = {
    description = packageField "description";
    license = map lib.getLicenseFromSpdxId (lib.splitString " OR " (packageField "license"));
    mainProgram = "microservice";
  };
}
