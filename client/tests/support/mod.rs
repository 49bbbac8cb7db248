//! Test support: a real `data-node` or `pm` process on a free loopback port with a temporary
//! data directory, killed (and its directory removed) when the guard drops.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The path of `bin` of workspace package `package` next to this test's own target directory
/// (`target/<profile>/<bin>`), built with the profile this test was built with if it is not
/// there yet. `cargo test --workspace` builds every binary for its own crate's tests (with the
/// features its tests enable, such as the data node's `fault-injection`): an existing binary is
/// used as it is, never rebuilt here, because a rebuild without those features would replace
/// the binary under the other crates' tests running at the same time. After changing a binary's
/// crate, run `cargo test --workspace` (or build the binary) before `cargo test -p client`.
/// Cargo gives `CARGO_BIN_EXE_<name>` only for this crate's binaries, hence the lookup.
fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let existing = profile_dir.join(bin);
    if existing.exists() {
        return existing;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    } else {
        build.args(["--profile", "test"]);
    }
    let status = build
        .status()
        .unwrap_or_else(|error| panic!("run cargo build for {bin}: {error}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let binary = profile_dir.join(bin);
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// The data-node binary, built once per test process.
pub fn data_node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("node", "data-node"))
        .clone()
}

/// The placement manager binary, built once per test process.
pub fn pm_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("pm", "pm")).clone()
}

pub fn es_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_es"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
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
    /// A data node that joins no cluster: ranges are created on it by hand.
    pub fn start() -> DataNode {
        DataNode::start_with_pm(None)
    }

    /// A data node that registers with the placement manager at `pm_address` (when given) and
    /// heartbeats to it every 200 ms.
    pub fn start_with_pm(pm_address: Option<&str>) -> DataNode {
        let binary = data_node_binary();
        let directory = tempfile::tempdir().expect("temp dir");
        let config = directory.path().join("data-node.yaml");
        let pm_section = match pm_address {
            None => "pm:\n  embedded: false\n  addresses: []\n".to_string(),
            Some(address) => format!(
                "pm:\n  embedded: false\n  addresses: [\"{address}\"]\n  heartbeat-interval-ms: 200\n"
            ),
        };
        std::fs::write(
            &config,
            format!(
                "server:\n  workers: 1\nstore:\n  segment-size-bytes: 4194304\n  cache-size-bytes: 4194304\n{pm_section}metrics:\n  enabled: false\n"
            ),
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
        wait_until_listening("data-node", &node.address);
        node
    }

    /// The process id (for SIGSTOP/SIGCONT of this node only).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

fn wait_until_listening(what: &str, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(address).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {address} within 20 s");
}

/// A real `pm` process: `pm -c <tiny config> --listen 127.0.0.1:<free port> --data-dir <temp>`.
pub struct PlacementManager {
    child: Child,
    pub address: String,
    _directory: tempfile::TempDir,
}

impl PlacementManager {
    pub fn start() -> PlacementManager {
        let binary = pm_binary();
        let directory = tempfile::tempdir().expect("temp dir");
        let config = directory.path().join("pm.yaml");
        // Short node timeout and maintenance interval so a test sees liveness quickly.
        std::fs::write(
            &config,
            "cluster:\n  heartbeat-interval-ms: 200\n  node-timeout-ms: 2000\n  min-free-disk-bytes: 0\nmetrics:\n  enabled: false\n",
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--listen")
            .arg(&address)
            .arg("--data-dir")
            .arg(directory.path().join("pm-data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pm");
        let manager = PlacementManager {
            child,
            address,
            _directory: directory,
        };
        wait_until_listening("pm", &manager.address);
        manager
    }

    /// The process id, to kill it by.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (by its pid) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PlacementManager {
    fn drop(&mut self) {
        self.kill();
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
