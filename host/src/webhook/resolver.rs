//! The webhook client's DNS resolver: it resolves a receiver's host name and
//! hands the HTTP client only the addresses the [`AddressPolicy`] accepts.
//!
//! Checking a name's addresses before the request and letting the client
//! resolve it again would leave a window: a name can answer a public address
//! to the check and `127.0.0.1` to the connect (DNS rebinding). Here the
//! addresses checked are the ones connected to. A literal address in a URL
//! never reaches a resolver; the delivery checks it itself.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::guard::{AddressPolicy, Refused};

/// Resolves with the system resolver, then drops refused addresses.
pub(super) struct GuardedResolver {
    pub(super) policy: AddressPolicy,
}

/// Every address a host name resolved to was refused. Found again by walking
/// the HTTP client's error's sources, so the delivery can count it apart.
#[derive(Debug)]
pub(super) struct RefusedHost {
    pub(super) host: String,
    /// The first refused address, to name the rule in the log.
    pub(super) refused: Refused,
}

impl fmt::Display for RefusedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves only to refused addresses: {}", self.host, self.refused)
    }
}

impl std::error::Error for RefusedHost {}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the URL's: the client replaces this 0.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let vetted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(refused) => {
                        first_refusal.get_or_insert(refused);
                        false
                    }
                })
                .collect();
            if !vetted.is_empty() {
                return Ok(Box::new(vetted.into_iter()) as Addrs);
            }
            let error: Box<dyn std::error::Error + Send + Sync> = match first_refusal {
                Some(refused) => Box::new(RefusedHost { host, refused }),
                None => Box::new(io::Error::new(io::ErrorKind::NotFound, "the host name has no address")),
            };
            Err(error)
        })
    }
}

/// The refusal behind a failed request, if the resolver refused its host.
pub(super) fn refused_host(error: &reqwest::Error) -> Option<&RefusedHost> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedHost>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}
