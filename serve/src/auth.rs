//! Authentication and authorisation shared by the data node and the placement manager: the
//! tokens a daemon was configured with, checked in constant time, and the rule that turns a
//! connection's role and a request's required role into an answer.
//!
//! The connection (`connection.rs`) keeps the role per connection and answers AUTHENTICATE
//! itself; the daemon's [`crate::Service`] says which role each of its operations needs. With no
//! token configured authentication is off: every connection has full rights (the loopback
//! default), and AUTHENTICATE is answered `ADMIN` whatever the token, so a client configured with
//! a token still works.

use std::fmt;

use wire::msg::Role;
use wire::ErrorCode;

use crate::reply::Reply;

/// Failed AUTHENTICATE requests one connection may make before it is closed: a peer cannot try
/// tokens without bound on one connection.
pub const MAX_FAILED_AUTHENTICATIONS: u32 = 8;

/// Whether `a` and `b` hold the same bytes, in time that depends only on their lengths (not on
/// where they first differ), so that answer times do not reveal a token byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        // Token lengths are not secret enough to hide: the comparison of equal-length inputs is
        // what must not leak a prefix.
        return false;
    }
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    // Keeps the compiler from turning the loop into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// A configured token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// The tokens of one daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    admin: Option<Secret>,
    client: Option<Secret>,
}

impl Tokens {
    /// Tokens from the configuration; both `None` turns authentication off.
    pub fn new(admin: Option<&str>, client: Option<&str>) -> Tokens {
        Tokens {
            admin: admin.map(|token| Secret(token.as_bytes().to_vec())),
            client: client.map(|token| Secret(token.as_bytes().to_vec())),
        }
    }

    /// No token configured: every connection has full rights.
    pub fn disabled() -> Tokens {
        Tokens::default()
    }

    /// Whether connections must authenticate.
    pub fn enabled(&self) -> bool {
        self.admin.is_some() || self.client.is_some()
    }

    /// The role `token` grants, or `None` for a wrong token. Both tokens are always compared, so
    /// the time taken does not tell which one (if any) matched.
    pub fn authenticate(&self, token: &str) -> Option<Role> {
        if !self.enabled() {
            return Some(Role::Admin);
        }
        let matches = |secret: &Option<Secret>| {
            secret
                .as_ref()
                .is_some_and(|secret| constant_time_eq(&secret.0, token.as_bytes()))
        };
        let admin = matches(&self.admin);
        let client = matches(&self.client);
        if admin {
            Some(Role::Admin)
        } else if client {
            Some(Role::Client)
        } else {
            None
        }
    }

    /// Whether a connection holding `role` (`None`: not authenticated) may run an operation
    /// that needs `required` (`None`: anyone, e.g. PING). The refusal names the operation.
    pub fn authorize(
        &self,
        role: Option<Role>,
        required: Option<Role>,
        operation: wire::Opcode,
    ) -> Result<(), Reply> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(required) = required else {
            return Ok(());
        };
        match role {
            None => Err(unauthenticated(operation)),
            Some(role) if role >= required => Ok(()),
            Some(role) => Err(Reply::error_with_detail(
                ErrorCode::PermissionDenied,
                role as u8,
                format!(
                    "{operation} needs the {} role, this connection authenticated as {role}; \
                     use the {} token",
                    required.name(),
                    required.name().to_ascii_lowercase()
                ),
            )),
        }
    }
}

/// Logs a warning when `listen` accepts connections from beyond loopback and no token is
/// configured: anyone who can reach the port then has full rights. `what` names the daemon.
pub fn warn_if_open(what: &str, listen: std::net::SocketAddr, tokens: &Tokens) {
    if !tokens.enabled() && !listen.ip().is_loopback() {
        log::warn!(
            "the {what} listens on {listen}, beyond loopback, without a token: anyone who can \
             reach it has full rights (create, trim and delete ranges and streams); set \
             auth.admin-token and auth.client-token (docs/operations.md, Authentication)"
        );
    }
}

/// The answer to a request on a connection that has not authenticated.
pub fn unauthenticated(operation: wire::Opcode) -> Reply {
    Reply::error(
        ErrorCode::Unauthenticated,
        format!(
            "{operation} needs an authenticated connection: send AUTHENTICATE with a token first"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::msg::Response;
    use wire::Opcode;

    fn code(result: Result<(), Reply>) -> Option<ErrorCode> {
        match result {
            Ok(()) => None,
            Err(reply) => match *reply.response {
                Response::Error(error) => Some(error.code),
                other => panic!("not an error: {other:?}"),
            },
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_contents() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"Token"));
        assert!(!constant_time_eq(b"token", b"token!"));
        assert!(!constant_time_eq(b"token", b""));
    }

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let tokens = Tokens::new(Some("admin-secret"), Some("client-secret"));
        assert!(tokens.enabled());
        assert_eq!(tokens.authenticate("admin-secret"), Some(Role::Admin));
        assert_eq!(tokens.authenticate("client-secret"), Some(Role::Client));
        assert_eq!(tokens.authenticate("admin-secre"), None);
        assert_eq!(tokens.authenticate(""), None);
        // Only an admin token configured: the client role does not exist.
        let admin_only = Tokens::new(Some("admin-secret"), None);
        assert_eq!(admin_only.authenticate("client-secret"), None);
        assert_eq!(admin_only.authenticate(""), None);
    }

    #[test]
    fn roles_are_checked_against_what_an_operation_needs() {
        let tokens = Tokens::new(Some("a"), Some("c"));
        let ping = Opcode::Ping;
        assert_eq!(code(tokens.authorize(None, None, ping)), None);
        assert_eq!(
            code(tokens.authorize(None, Some(Role::Client), Opcode::Append)),
            Some(ErrorCode::Unauthenticated)
        );
        assert_eq!(
            code(tokens.authorize(Some(Role::Client), Some(Role::Client), Opcode::Append)),
            None
        );
        assert_eq!(
            code(tokens.authorize(Some(Role::Client), Some(Role::Admin), Opcode::CreateRange)),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            code(tokens.authorize(Some(Role::Admin), Some(Role::Client), Opcode::Append)),
            None
        );
        assert_eq!(
            code(tokens.authorize(Some(Role::Admin), Some(Role::Admin), Opcode::CreateRange)),
            None
        );
    }

    #[test]
    fn without_tokens_everything_is_allowed() {
        let tokens = Tokens::disabled();
        assert!(!tokens.enabled());
        assert_eq!(tokens.authenticate("anything"), Some(Role::Admin));
        assert_eq!(
            code(tokens.authorize(None, Some(Role::Admin), Opcode::DeleteRange)),
            None
        );
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = Tokens::new(Some("admin-secret"), Some("client-secret"));
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
