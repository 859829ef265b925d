//! Where the `microservice` binary that the lab runs comes from: given, or
//! the one beside the running program, which under `cargo run` is first
//! built in the same profile so that it is never stale.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// `explicit`, else `microservice` next to this program (built first when
/// running under cargo). `program` names the caller in messages.
pub fn locate(explicit: Option<PathBuf>, program: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.is_file(), "{}: no such file", path.display());
        return Ok(path);
    }
    build_under_cargo(program)?;
    crate::instance::sibling_binary("microservice").with_context(|| {
        format!(
            "no microservice binary next to {program}: run `cargo build` first, or pass --service-bin"
        )
    })
}

/// The workspace's manifest: whatever directory cargo was started in.
const WORKSPACE_MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");

/// Under `cargo run`, builds the service in this program's profile.
fn build_under_cargo(program: &str) -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("release");
    let profile = if profile == "debug" { "dev" } else { profile };
    eprintln!(
        "{program}: building the service (cargo build --bin microservice --profile {profile})"
    );
    build(Path::new(&cargo), profile)
}

/// `cargo build` of the service, its progress shown: on a fresh checkout
/// `cargo run` built only the lab, and this compiles the service's own
/// dependencies, which takes a while.
fn build(cargo: &Path, profile: &str) -> anyhow::Result<()> {
    // The workspace's default members, as `cargo run` selected them: the
    // same feature set, so nothing but the service is compiled again.
    let status = std::process::Command::new(cargo)
        .args(["build", "--bin", "microservice", "--profile", profile])
        .arg("--manifest-path")
        .arg(WORKSPACE_MANIFEST)
        .status()
        .with_context(|| format!("running {} build", cargo.display()))?;
    anyhow::ensure!(
        status.success(),
        "cargo build of the service failed ({status}); its messages are above"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A stand-in for cargo that notes its arguments and exits with `code`.
    fn fake_cargo(code: u8) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lab-fake-cargo-{}-{code}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = dir.join("args");
        let script = dir.join("cargo");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}\nexit {code}\n", args.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script, args)
    }

    #[test]
    fn the_service_is_built_with_cargos_progress_shown() {
        let (cargo, args) = fake_cargo(0);
        build(&cargo, "dev").unwrap();
        let args = std::fs::read_to_string(args).unwrap();
        assert!(
            args.starts_with("build --bin microservice --profile dev --manifest-path "),
            "{args}"
        );
        assert!(!args.contains("--quiet"), "{args}");
    }

    #[test]
    fn a_failed_build_says_where_its_messages_are() {
        let (cargo, _) = fake_cargo(101);
        let error = build(&cargo, "release").unwrap_err().to_string();
        assert!(
            error.starts_with("cargo build of the service failed (exit status: 101)"),
            "{error}"
        );
    }
}
