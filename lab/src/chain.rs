//! A linear chain of instances: hop 1 calls hop 2 calls hop 3 …

use std::path::Path;

use crate::instance::{Instance, InstanceConfig};

pub struct Chain {
    /// In chain order: the entry hop first.
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

    pub fn entry(&self) -> &Instance {
        &self.hops[0]
    }
}
