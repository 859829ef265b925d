//! Running instances of the real `microservice` binary: spawned on port 0,
//! found through the `listening` line they log, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long an instance may take to log that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Output lines kept per stream: the latest, so a long run stays small.
const KEPT_LINES: usize = 5_000;

/// What one instance gets in its environment. The parent's environment is
/// not inherited, so a developer's OTEL_* variables cannot leak into a test.
#[derive(Debug, Clone, Default)]
pub struct InstanceConfig {
    pub env: Vec<(String, String)>,
}

impl InstanceConfig {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }
}

type Lines = Arc<Mutex<std::collections::VecDeque<String>>>;

pub struct Instance {
    child: Child,
    pid: u32,
    url: String,
    stdout: Lines,
    stderr: Lines,
    /// The tasks reading stdout and stderr: `wait` lets them reach the end,
    /// so that the last lines a process wrote are there once it has exited.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Instance {
    /// Starts `binary` with `config` (plus HTTP_PORT=0 unless set) and waits
    /// until it listens.
    pub async fn spawn(binary: &Path, config: &InstanceConfig) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", "0")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            // Should whoever started it die without stopping it, it stops too.
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the instance exited at once")?;
        let (stdout, stderr): (Lines, Lines) = (Arc::default(), Arc::default());
        let (listening_tx, listening_rx) = oneshot::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(collect(
                out,
                stdout.clone(),
                Some(listening_tx),
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(collect(err, stderr.clone(), None)));
        }
        let url = tokio::select! {
            url = listening_rx => url.ok(),
            _ = child.wait() => None,
            () = tokio::time::sleep(START_TIMEOUT) => None,
        };
        let Some(url) = url else {
            // Its output ended without the line, or it exited: say how, with
            // what it wrote (the readers need a moment for the last lines).
            let exited = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            match exited {
                Ok(Ok(status)) => bail!(
                    "the instance exited with {status} before listening: {}",
                    lines(&stderr).join("\n")
                ),
                _ => bail!(
                    "the instance did not log `listening` within {START_TIMEOUT:?}: {}",
                    lines(&stdout).join("\n")
                ),
            }
        };
        Ok(Self {
            child,
            pid,
            url,
            stdout,
            stderr,
            readers,
        })
    }

    /// `http://127.0.0.1:<port>/`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn stdout(&self) -> Vec<String> {
        lines(&self.stdout)
    }

    pub fn stderr(&self) -> Vec<String> {
        lines(&self.stderr)
    }

    pub fn terminate(&self) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM).context("sending SIGTERM")
    }

    /// The exit status, if the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to exit; `None` when `timeout` passed first.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)?;
        // Its pipes close as it exits (unless a child of its own holds them).
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        Some(status)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }

    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid)
    }
}

/// CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// USER_HZ, 100 on every Linux architecture the lab runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn lines(lines: &Lines) -> Vec<String> {
    lines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Keeps every line; reports the URL of the first `listening` line.
async fn collect(
    stream: impl AsyncRead + Unpin,
    into: Lines,
    mut listening: Option<oneshot::Sender<String>>,
) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if let Some(url) = listening_url(&line) {
            if let Some(sender) = listening.take() {
                let _ = sender.send(url);
            }
        }
        let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}

/// The `url=` of a `listening` log line, text or JSON.
fn listening_url(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("http://")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    Some(url)
}

/// Where `cargo build --release` puts the service next to this binary.
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join(name);
    candidate.exists().then_some(candidate)
}

/// A loopback address nothing listens on (bound once, then released).
pub fn unused_local_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 9)))
}

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn finds_the_url_in_text_and_json_lines() {
        assert_eq!(
            listening_url(
                "2026 INFO microservice::startup: listening url=http://127.0.0.1:4242/ service=a"
            )
            .as_deref(),
            Some("http://127.0.0.1:4242/")
        );
        assert_eq!(
            listening_url(r#"{"message":"listening","url":"http://127.0.0.1:4242/"}"#).as_deref(),
            Some("http://127.0.0.1:4242/")
        );
        assert_eq!(
            listening_url("INFO poem::server: listening addr=socket://127.0.0.1:1"),
            None
        );
    }
}
