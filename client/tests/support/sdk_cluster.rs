//! A placement manager and data nodes registered with it, for the SDK's tests: real binaries on
//! loopback ports chosen at run time, each killed (by its pid) when the guard drops.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use client::command::RequestCommand;
use client::session::{Reply, Session};
use client::{Client, ClientConfig};

use crate::support::{DataNode, PlacementManager};

pub struct SdkCluster {
    pub nodes: Vec<DataNode>,
    pub pm: PlacementManager,
}

impl SdkCluster {
    /// A placement manager and `node_count` data nodes, once the placement manager sees them
    /// all alive.
    pub fn start(node_count: usize) -> SdkCluster {
        // RUST_LOG=client=info shows the SDK's seals and placements.
        let _ = env_logger::builder().is_test(true).try_init();
        let pm = PlacementManager::start();
        let nodes: Vec<DataNode> = (0..node_count)
            .map(|_| DataNode::start_with_pm(Some(&pm.address)))
            .collect();
        let cluster = SdkCluster { nodes, pm };
        cluster.wait_alive(node_count);
        cluster
    }

    /// Waits until the placement manager reports `count` live nodes.
    pub fn wait_alive(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive = Session::connect(&self.pm.address)
                .ok()
                .and_then(|mut session| session.execute(&RequestCommand::DescribeCluster).ok())
                .map(|outcome| match outcome.reply {
                    Reply::Cluster(nodes) => nodes.iter().filter(|node| node.alive).count(),
                    _ => 0,
                })
                .unwrap_or(0);
            if alive >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{alive} of {count} data nodes alive after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client of this cluster with the default configuration.
    pub fn client(&self) -> Client {
        Client::connect(self.config()).expect("connect the SDK client")
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(vec![self.pm.address.clone()])
    }
}
