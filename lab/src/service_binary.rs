//! Where the `microservice` binary that the lab runs comes from: given, or
//! the one beside the running program, which under `cargo run` is first
//! built in the same profile so that it is never stale.

use std::path::PathBuf;

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
    // The workspace's default members, as `cargo run` selected them: the
    // same feature set, so nothing but the service is compiled again.
    eprintln!(
        "{program}: building the service (cargo build --bin microservice --profile {profile})"
    );
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "microservice",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(WORKSPACE_MANIFEST)
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of the service failed");
    Ok(())
}
