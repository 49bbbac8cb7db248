//! Test support: a real `data-node` process on a free loopback port with a temporary data
//! directory, killed (and its directory removed) when the guard drops.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the data-node binary once per test process and returns its path. It lands next to
/// this test's own target directory (`target/<profile>/data-node`).
pub fn data_node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let test_exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>
            let profile_dir = test_exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
            let mut build = Command::new(cargo);
            build
                .args(["build", "-p", "node", "--bin", "data-node"])
                .env("CARGO_TARGET_DIR", &target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // The profile `cargo test` itself builds with, so that after `cargo test
            // --workspace` (which builds data-node for the node's own tests) this is a no-op.
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            } else {
                build.args(["--profile", "test"]);
            }
            let status = build.status().expect("run cargo build for data-node");
            assert!(
                status.success(),
                "cargo build -p node --bin data-node failed"
            );
            let binary = profile_dir.join("data-node");
            assert!(binary.exists(), "{} was not built", binary.display());
            binary
        })
        .clone()
}

pub fn es_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_es"))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct DataNode {
    child: Child,
    pub address: String,
    _directory: tempfile::TempDir,
}

impl DataNode {
    pub fn start() -> DataNode {
        let binary = data_node_binary();
        let directory = tempfile::tempdir().expect("temp dir");
        let config = directory.path().join("data-node.yaml");
        std::fs::write(
            &config,
            "server:\n  workers: 1\nstore:\n  segment-size-bytes: 4194304\n  cache-size-bytes: 4194304\npm:\n  embedded: false\n  addresses: []\nmetrics:\n  enabled: false\n",
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--listen")
            .arg(&address)
            .arg("--data-dir")
            .arg(directory.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start data-node");
        let node = DataNode {
            child,
            address,
            _directory: directory,
        };
        node.wait_until_listening();
        node
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("data-node did not listen on {} within 20 s", self.address);
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for DataNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `es shell ADDR` with `script` on stdin; returns its output.
pub fn run_shell(address: &str, script: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = Command::new(es_binary())
        .args(extra)
        .arg("shell")
        .arg(address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start es shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().expect("es shell output")
}

/// Runs a one-shot `es` command.
pub fn run_es(arguments: &[&str]) -> Output {
    Command::new(es_binary())
        .args(arguments)
        .output()
        .expect("run es")
}
