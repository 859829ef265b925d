//! Running the `lab` binary as a user would, and reading what it prints.
#![allow(dead_code)] // each test crate uses a part of it

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(30);

/// The service binary next to `lab`, built once per test run.
pub fn service_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bin",
                "microservice",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the service failed");
    });
    lab.with_file_name("microservice")
}

pub struct ChainFile(PathBuf);

impl ChainFile {
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ChainFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn chain_file(json: &str) -> ChainFile {
    let path = std::env::temp_dir().join(format!(
        "lab-chain-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, json).unwrap();
    ChainFile(path)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A running `lab` with everything it printed (stdout and stderr, in the
/// order they were read).
pub struct Lab {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lab {
    pub async fn start(args: &[&str]) -> Self {
        let service = service_bin();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(args)
            .arg("--service-bin")
            .arg(&service)
            .env_remove("CARGO")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("lab starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(collect(child.stdout.take().unwrap(), lines.clone()));
        tokio::spawn(collect(child.stderr.take().unwrap(), lines.clone()));
        Self { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    async fn wait_for<T>(&self, what: &str, find: impl Fn(&[String]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = find(&self.output()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?}:\n{}",
                self.output().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The entry URL the banner names.
    pub async fn entry_url(&self) -> String {
        self.wait_for("entry URL", |lines| {
            lines.iter().find_map(|line| {
                let rest = line.strip_prefix("Open ")?;
                Some(rest.split_whitespace().next()?.to_string())
            })
        })
        .await
    }

    /// The lines of the waterfall of `trace_id`: the header, then a line
    /// per span.
    pub async fn waterfall(&self, trace_id: &str) -> Vec<String> {
        let header = format!("trace {trace_id} ");
        self.wait_for("waterfall", |lines| {
            let start = lines.iter().position(|l| l.starts_with(&header))?;
            let length = lines[start..].iter().position(String::is_empty)?;
            Some(lines[start..start + length].to_vec())
        })
        .await
    }

    /// SIGTERM, then the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("lab exits after SIGTERM")
            .unwrap();
        // Let the readers take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status
    }
}

/// Runs `lab` until it exits by itself: its status and all it printed.
pub async fn run_to_end(args: &[&str]) -> (ExitStatus, String) {
    let mut lab = Lab::start(args).await;
    let status = tokio::time::timeout(WAIT, lab.child.wait())
        .await
        .expect("lab exits by itself")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (status, lab.output().join("\n"))
}

async fn collect(stream: impl AsyncRead + Unpin, into: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock().unwrap().push(line);
    }
}

/// One request to `url`; the trace id from its `traceresponse` header.
pub async fn request(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the entry answers");
    let value = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    value.split('-').nth(1).unwrap().to_string()
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    fields.get(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

pub fn free_port() -> u16 {
    lab::instance::unused_local_addr().port()
}

/// Columns of the bar that a span line fills: (first, last + 1).
pub fn bar_span(line: &str) -> (usize, usize) {
    let bar: Vec<char> = line
        .chars()
        .skip(13)
        .take(lab::runner::trace_view::BAR_WIDTH)
        .collect();
    let first = bar.iter().position(|c| *c == '█').expect("a bar");
    let last = bar.iter().rposition(|c| *c == '█').expect("a bar");
    (first, last + 1)
}
