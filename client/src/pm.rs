//! Reaching the placement manager for `es stream` and `es cluster`: a list of addresses tried in
//! order. A placement manager that cannot be reached, is closing the connection (GOAWAY) or
//! answers `NOT_LEADER` or `SHUTTING_DOWN` has not applied the request, so the request moves on
//! to the next address; the first other answer, success or error, is the result. A connection
//! that fails after the request was sent is not retried elsewhere: the request may have been
//! applied (a second CREATE_STREAM would create a second stream).

use std::fmt;

use wire::ErrorCode;

use crate::command::RequestCommand;
use crate::conn::ClientError;
use crate::session::{Outcome, Reply, Session};

/// Where a placement manager listens by default (the `pm` daemon, and the one a data node
/// embeds with the shipped `etc/data-node.yaml`).
pub const DEFAULT_PM_ADDRESS: &str = "127.0.0.1:12378";
/// Most addresses `--pm` takes: a placement manager group is a handful of processes.
pub const MAX_PM_ADDRESSES: usize = 16;

/// What to do when no placement manager answers.
const START_ONE_HINT: &str = "is a placement manager running? start one with \
     `pm -c etc/pm.yaml` or a data node with pm.embedded: true, or give its address with \
     --pm ADDR[,ADDR...]";

/// The placement managers to try, in order.
#[derive(Debug, Clone)]
pub struct PlacementManagers {
    addresses: Vec<String>,
}

/// Why a request got no answer from any placement manager.
#[derive(Debug)]
pub enum PmError {
    /// Every address was tried; each is listed with why it was passed over.
    Unreachable(Vec<(String, String)>),
    /// The request was sent to `address` but the exchange failed before an answer arrived.
    Failed { address: String, error: ClientError },
}

impl fmt::Display for PmError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PmError::Unreachable(tried) => {
                let tried: Vec<String> = tried
                    .iter()
                    .map(|(address, why)| format!("{address} ({why})"))
                    .collect();
                write!(
                    formatter,
                    "no placement manager answered at {}; {START_ONE_HINT}",
                    tried.join(", ")
                )
            }
            PmError::Failed { address, error } => write!(
                formatter,
                "placement manager at {address}: {error}; the request may or may not have \
                 been applied"
            ),
        }
    }
}

impl std::error::Error for PmError {}

/// Splits `ADDR[,ADDR...]`, refusing empty entries and more than [`MAX_PM_ADDRESSES`].
pub fn parse_addresses(text: &str) -> Result<Vec<String>, String> {
    let addresses: Vec<String> = text
        .split(',')
        .map(|address| address.trim().to_string())
        .collect();
    if addresses.iter().any(String::is_empty) {
        return Err(format!(
            "--pm `{text}` has an empty address; expected ADDR[,ADDR...], e.g. {DEFAULT_PM_ADDRESS}"
        ));
    }
    if addresses.len() > MAX_PM_ADDRESSES {
        return Err(format!(
            "--pm lists {} addresses, at most {MAX_PM_ADDRESSES} are tried",
            addresses.len()
        ));
    }
    Ok(addresses)
}

/// Whether an error answer means "this placement manager did not apply it, ask the next one".
fn hands_on(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NotLeader | ErrorCode::ShuttingDown)
}

impl PlacementManagers {
    pub fn new(addresses: Vec<String>) -> PlacementManagers {
        assert!(
            !addresses.is_empty(),
            "at least one placement manager address"
        );
        PlacementManagers { addresses }
    }

    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Sends `command` to the first placement manager that takes it. When every one refused
    /// with `NOT_LEADER` or `SHUTTING_DOWN`, the last refusal is the outcome.
    pub fn execute(&self, command: &RequestCommand) -> Result<Outcome, PmError> {
        let mut passed_over = Vec::new();
        let mut last_refusal = None;
        for address in &self.addresses {
            let mut session = match Session::connect(address) {
                Ok(session) => session,
                Err(ClientError::Connect { error, .. }) => {
                    passed_over.push((address.clone(), error.to_string()));
                    continue;
                }
                Err(error) => {
                    passed_over.push((address.clone(), error.to_string()));
                    continue;
                }
            };
            match session.execute(command) {
                Ok(outcome) => match &outcome.reply {
                    Reply::Failed(error) if hands_on(error.code) => {
                        log::info!("{address} answered {}; trying the next", error.code);
                        passed_over.push((address.clone(), error.code.name().to_string()));
                        last_refusal = Some(outcome);
                    }
                    _ => return Ok(outcome),
                },
                Err(error @ ClientError::Goaway { .. }) => {
                    passed_over.push((address.clone(), error.to_string()));
                }
                Err(error) => {
                    return Err(PmError::Failed {
                        address: address.clone(),
                        error,
                    })
                }
            }
        }
        last_refusal.ok_or(PmError::Unreachable(passed_over))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split_on_commas() {
        assert_eq!(
            parse_addresses("127.0.0.1:12378").unwrap(),
            vec!["127.0.0.1:12378"]
        );
        assert_eq!(
            parse_addresses("a:1, b:2,c:3").unwrap(),
            vec!["a:1", "b:2", "c:3"]
        );
        assert!(parse_addresses("a:1,,b:2")
            .unwrap_err()
            .contains("has an empty address"));
        assert!(parse_addresses(&vec!["a:1"; 17].join(","))
            .unwrap_err()
            .contains("at most 16"));
    }

    /// A loopback port nobody listens on: bound, then released.
    fn closed_port_address() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        address
    }

    #[test]
    fn unreachable_names_every_address_and_how_to_start_one() {
        let first = closed_port_address();
        let second = closed_port_address();
        let managers = PlacementManagers::new(vec![first.clone(), second.clone()]);
        let Err(error) = managers.execute(&RequestCommand::DescribeCluster) else {
            panic!("nobody listens, yet an answer came");
        };
        assert!(matches!(&error, PmError::Unreachable(tried) if tried.len() == 2));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("no placement manager answered at {first} (")),
            "{message}"
        );
        assert!(message.contains(&format!(", {second} (")), "{message}");
        assert!(message.contains("`pm -c etc/pm.yaml`"), "{message}");
        assert!(message.contains("pm.embedded: true"), "{message}");
    }
}
