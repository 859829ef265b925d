//! The programs under test, and the files they read.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace's root: the checkout.
pub fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `microservice` binary of this build, built first (once per test
/// process) when the tests run under cargo: `cargo test -p lab` does not
/// build the service by itself.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = build_dir();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--bin", "microservice", "--profile"])
                .arg(profile)
                .arg("--manifest-path")
                .arg(workspace().join("Cargo.toml"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the service failed");
        }
        dir.join("microservice")
    })
}

/// The `lab` runner binary of this build (cargo builds it for the lab
/// crate's tests).
pub fn lab_bin() -> PathBuf {
    build_dir().join("lab")
}

/// `target/<profile>`: a test program runs from its `deps/` folder.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test program's path");
    let dir = exe.parent().expect("a folder");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("the profile's folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The checkout's templates.
pub fn templates_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../templates")
}

/// A folder of its own under the temporary directory, made empty.
pub fn temp_path(prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A copy of the templates that a test may edit or break.
pub fn tempdir_with_templates() -> PathBuf {
    let dir = temp_path("microservice-templates");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["page.html", "part.html"] {
        std::fs::copy(Path::new(templates_dir()).join(name), dir.join(name)).unwrap();
    }
    dir
}
