//! A three-node Apache Kafka cluster of its own (`infra/cluster.sh`: replication factor 3,
//! min.insync.replicas 2) under a temporary directory, stopped on drop.

use std::process::{Command, Stdio};

use anyhow::{Result, ensure};
use driftline_kafka::KafkaArgs;

use crate::whole_loop::repo;

pub struct Cluster {
    dir: tempfile::TempDir,
    base_port: u16,
    pub bootstrap: String,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("infra/cluster.sh"))
            .args(args)
            .env("DRIFTLINE_CLUSTER_DIR", self.dir.path())
            .env("DRIFTLINE_CLUSTER_PORT", self.base_port.to_string());
        c
    }

    /// Starts the three nodes on `DRIFTLINE_TEST_CLUSTER_PORT` and the next two (default
    /// 39092), their controllers 100 above.
    pub fn start() -> Result<Self> {
        let base_port: u16 = std::env::var("DRIFTLINE_TEST_CLUSTER_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(39_092);
        for p in [base_port, base_port + 1, base_port + 2] {
            ensure!(
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "port {p} is taken: set DRIFTLINE_TEST_CLUSTER_PORT to a free range"
            );
        }
        let mut cluster = Self {
            dir: tempfile::tempdir()?,
            base_port,
            bootstrap: String::new(),
        };
        let out = cluster
            .script(&["start"])
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(out.status.success(), "the cluster did not start");
        cluster.bootstrap = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(cluster)
    }

    /// `infra/cluster.sh <args>` on this cluster (`kill 2`, `restart 2`, ...).
    pub fn run(&self, args: &[&str]) -> Result<()> {
        let status = self.script(args).status()?;
        ensure!(status.success(), "cluster.sh {args:?}: {status}");
        Ok(())
    }

    pub fn kafka(&self) -> KafkaArgs {
        KafkaArgs::with_bootstrap(self.bootstrap.clone())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]).status();
    }
}
