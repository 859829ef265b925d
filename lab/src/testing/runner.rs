//! The lab runner (`lab`) run as a user runs it, and what it prints read
//! back.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::binaries::{binary, lab_bin, temp_path};
use crate::runner::waterfall::bar_of;

const WAIT: Duration = Duration::from_secs(30);

/// A chain file in the temporary directory, removed when dropped.
pub struct TempChainFile(PathBuf);

impl TempChainFile {
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempChainFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `json` written to a chain file of its own.
pub fn chain_file(json: &str) -> TempChainFile {
    let path = temp_path("lab-chain").with_extension("json");
    std::fs::write(&path, json).unwrap();
    TempChainFile(path)
}

/// A running `lab` with everything it printed (stdout and stderr, in the
/// order they were read).
pub struct Lab {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lab {
    pub async fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// [`Lab::start`] with these variables set too.
    pub async fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(lab_bin())
            .args(args)
            .envs(envs.iter().copied())
            .arg("--service-bin")
            .arg(binary())
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
        self.block(trace_id, "waterfall", |_| true).await
    }

    /// The lines of the late part of `trace_id`, drawn after its waterfall.
    pub async fn late_waterfall(&self, trace_id: &str) -> Vec<String> {
        self.block(trace_id, "late waterfall", |header| {
            header.contains(" · late: ")
        })
        .await
    }

    async fn block(&self, trace_id: &str, what: &str, pick: impl Fn(&str) -> bool) -> Vec<String> {
        let header = format!("trace {trace_id} ");
        self.wait_for(what, |lines| {
            let start = lines
                .iter()
                .position(|l| l.starts_with(&header) && pick(l))?;
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
    crate::instance::unused_local_addr().port()
}

/// Columns of the bar that a span line fills: (first, last + 1).
pub fn bar_span(line: &str) -> (usize, usize) {
    bar_of(line).expect("a bar")
}
