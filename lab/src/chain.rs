//! Running chains of instances: a line of hops (hop 1 calls hop 2 calls
//! hop 3 …) for the tests and the benchmark, or any [`Topology`] from a
//! chain file.

use std::path::Path;
use std::time::Duration;

use crate::chain_file::Topology;
use crate::instance::{Instance, InstanceConfig};

pub struct Chain {
    /// In chain order (for a topology: its hops' order); the entry first.
    pub hops: Vec<Instance>,
}

impl Chain {
    /// Starts one instance per entry of `hops` (each with `common` before its
    /// own variables), the last hop first, and points each at the next.
    pub async fn start(
        binary: &Path,
        common: &InstanceConfig,
        hops: &[InstanceConfig],
    ) -> anyhow::Result<Self> {
        let mut started: Vec<Instance> = Vec::with_capacity(hops.len());
        for hop in hops.iter().rev() {
            let mut config = common.clone().envs(hop.env.iter().cloned());
            if let Some(next) = started.last() {
                config = config.env("EXTERNAL_CALL_URL", next.url());
            }
            started.push(Instance::spawn(binary, &config).await?);
        }
        started.reverse();
        Ok(Self { hops: started })
    }

    /// Starts every hop of `topology` after the hops it calls, on the port
    /// its spec gives (0: any free one). If one cannot start, the ones
    /// already running are stopped and the error names the hop.
    pub async fn start_topology(
        binary: &Path,
        common: &InstanceConfig,
        topology: &Topology,
    ) -> anyhow::Result<Self> {
        let mut started: Vec<Option<Instance>> = topology.hops.iter().map(|_| None).collect();
        for &index in &topology.start_order {
            let spec = &topology.hops[index];
            let callee_urls: Vec<String> = topology.calls[index]
                .iter()
                .filter_map(|&callee| started[callee].as_ref().map(|i| i.url().to_string()))
                .collect();
            let config = common.clone().envs(spec.environment(&callee_urls));
            match Instance::spawn(binary, &config).await {
                Ok(instance) => started[index] = Some(instance),
                Err(error) => {
                    let mut running = Self {
                        hops: started.into_iter().flatten().collect(),
                    };
                    running.stop(STOP_TIMEOUT).await;
                    let reason = format!("{error:#}");
                    let reason = if reason.contains("Address already in use") {
                        format!(
                            "port {} is taken by another program; stop it, or give the hop another port in a chain file",
                            spec.port
                        )
                    } else {
                        reason
                    };
                    let count = running.hops.len();
                    anyhow::bail!(
                        "hop `{}` ({}) could not start: {reason}; the {count} hop{} already started {} stopped",
                        spec.name,
                        topology.service_name(index),
                        if count == 1 { "" } else { "s" },
                        if count == 1 { "was" } else { "were" },
                    );
                }
            }
        }
        Ok(Self {
            hops: started.into_iter().flatten().collect(),
        })
    }

    pub fn entry(&self) -> &Instance {
        &self.hops[0]
    }

    /// SIGTERM to every hop at once (each drains and flushes its spans),
    /// then waits; gives the indexes of hops that had to be killed.
    pub async fn stop(&mut self, timeout: Duration) -> Vec<usize> {
        for hop in &self.hops {
            let _ = hop.terminate();
        }
        let mut killed = Vec::new();
        for (index, hop) in self.hops.iter_mut().enumerate() {
            if hop.wait(timeout).await.is_none() {
                hop.kill().await;
                killed.push(index);
            }
        }
        killed
    }
}

/// How long hops get to stop and flush before they are killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(8);
