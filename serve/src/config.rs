//! Reading a daemon's YAML configuration, the same way for the data node and the placement
//! manager: [`load`] and [`parse`] turn text into the daemon's config type (unknown keys and wrong
//! types are refused by its serde attributes and named in the error), and [`ConfigError`] says
//! which file or key is at fault. Each daemon validates its values itself and reports every bad
//! key as [`ConfigError::Invalid`].

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration could not be used. The message names the file or key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, reason: String },
    /// The text is not valid YAML for this schema (unknown key, wrong type).
    Parse { origin: String, reason: String },
    /// Values that parse but are out of range; one message per key.
    Invalid(Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, reason } => {
                write!(
                    formatter,
                    "cannot read config file {}: {reason}",
                    path.display()
                )
            }
            ConfigError::Parse { origin, reason } => write!(formatter, "{origin}: {reason}"),
            ConfigError::Invalid(problems) => {
                write!(formatter, "invalid configuration: {}", problems.join("; "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses a file; the caller validates the values after applying its overrides.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses YAML text; `origin` names the text in error messages. An empty text is all defaults.
pub fn parse<T: DeserializeOwned + Default>(text: &str, origin: &str) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(text).map_err(|error| ConfigError::Parse {
        origin: origin.to_string(),
        reason: error.to_string(),
    })
}

/// `host:port` resolved to its first address, or `None` when it does not parse or resolve.
pub fn parse_socket_address(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.to_socket_addrs().ok()?.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
    struct Example {
        listen_port: u16,
    }

    #[test]
    fn empty_text_is_the_defaults_and_unknown_keys_are_named() {
        assert_eq!(parse::<Example>("  \n", "t").unwrap(), Example::default());
        assert_eq!(
            parse::<Example>("listen-port: 7\n", "t").unwrap(),
            Example { listen_port: 7 }
        );
        let error = parse::<Example>("listen-prot: 7\n", "file.yaml").unwrap_err();
        assert!(
            error.to_string().starts_with("file.yaml: ")
                && error.to_string().contains("listen-prot"),
            "{error}"
        );
        let missing = load::<Example>(Path::new("/nonexistent/config.yaml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    }

    #[test]
    fn addresses_parse_or_resolve() {
        assert_eq!(
            parse_socket_address("127.0.0.1:12378"),
            Some("127.0.0.1:12378".parse().unwrap())
        );
        assert!(parse_socket_address("localhost:1").is_some());
        assert_eq!(parse_socket_address("nowhere"), None);
    }
}
