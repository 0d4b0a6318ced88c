//! Where a webhook may go: the address policy that keeps a client from making
//! the server call loopback admin ports, the cloud metadata service
//! (169.254.169.254) or hosts of the operator's internal network (SSRF).
//!
//! An address in one of IANA's special-purpose ranges (loopback, private,
//! shared, link-local, unique-local, multicast, documentation, …) is refused
//! unless the operator lets its network through with
//! `WEBHOOK_ALLOWED_NETWORKS`, as a compose deployment does for a receiver
//! beside the server. An IPv6 address that carries an IPv4 one (mapped,
//! NAT64, 6to4) is judged by the IPv4 address too, since that is where the
//! packets end up.
//!
//! The same policy is applied twice: [`AddressPolicy::check_url`] refuses a
//! URL whose host is a literal address when the job is created, and the
//! delivery's resolver (`resolver.rs`) drops every refused address a host name
//! resolves to, so a connection only ever goes to an address that was checked,
//! and DNS rebinding has no window between the check and the connect.
//!
//! ```
//! use avtomatika::webhook::AddressPolicy;
//!
//! let policy = AddressPolicy::default();
//! assert!(policy.check_url("https://hooks.example.com/job?token=t").is_ok());
//! let refused = policy.check_url("http://169.254.169.254/latest/meta-data").unwrap_err();
//! assert!(refused.to_string().contains("link-local"));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The kind of special-purpose range an address was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Unspecified,
    Loopback,
    /// RFC 1918, and IPv6's local-use NAT64 prefix.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    Shared,
    /// 169.254.0.0/16 and fe80::/10: where cloud metadata services answer.
    LinkLocal,
    /// fc00::/7 (RFC 4193), and the deprecated site-local fec0::/10.
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// IETF protocol assignments, "reserved for future use", discard-only.
    Reserved,
    /// ::a.b.c.d, deprecated by RFC 4291 and never routed.
    Ipv4Compatible,
}

impl Range {
    fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::Shared => "a shared (carrier-grade NAT) address",
            Self::LinkLocal => "a link-local address",
            Self::UniqueLocal => "a unique-local address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Reserved => "a reserved address",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address (deprecated)",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(s: [u16; 8], prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), prefix)
}

/// IPv4 ranges refused by default (IANA's IPv4 special-purpose registry,
/// less the few that are globally reachable). The first match names the
/// rule, so the broadcast address comes before 240.0.0.0/4.
const REFUSED_V4: &[(Ipv4Net, Range)] = &[
    (v4(0, 0, 0, 0, 8), Range::Unspecified),
    (v4(10, 0, 0, 0, 8), Range::Private),
    (v4(100, 64, 0, 0, 10), Range::Shared),
    (v4(127, 0, 0, 0, 8), Range::Loopback),
    (v4(169, 254, 0, 0, 16), Range::LinkLocal),
    (v4(172, 16, 0, 0, 12), Range::Private),
    (v4(192, 0, 0, 0, 24), Range::Reserved),
    (v4(192, 0, 2, 0, 24), Range::Documentation),
    (v4(192, 88, 99, 0, 24), Range::Reserved),
    (v4(192, 168, 0, 0, 16), Range::Private),
    (v4(198, 18, 0, 0, 15), Range::Benchmarking),
    (v4(198, 51, 100, 0, 24), Range::Documentation),
    (v4(203, 0, 113, 0, 24), Range::Documentation),
    (v4(224, 0, 0, 0, 4), Range::Multicast),
    (v4(255, 255, 255, 255, 32), Range::Broadcast),
    (v4(240, 0, 0, 0, 4), Range::Reserved),
];

/// IPv6 ranges refused by default (IANA's IPv6 special-purpose registry).
/// The prefixes that embed an IPv4 address are judged by it instead
/// ([`embedded_ipv4`]); `::/96` is listed after `::` and `::1`, which it holds.
const REFUSED_V6: &[(Ipv6Net, Range)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Range::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Range::Loopback),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), Range::Ipv4Compatible),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Range::Private),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Range::Reserved),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Range::Documentation),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), Range::Benchmarking),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Range::Reserved),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), Range::Documentation),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Range::UniqueLocal),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Range::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Range::UniqueLocal),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Range::Multicast),
];

/// The IPv4 address an IPv6 one delivers to, where it carries one: mapped
/// (`::ffff:a.b.c.d`, which a dual-stack socket sends over IPv4), NAT64
/// (`64:ff9b::/96`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    let s = ip.segments();
    let split = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(split(hi, lo)),
        [0x2002, hi, lo, ..] => Some(split(hi, lo)),
        _ => None,
    }
}

/// An address the policy refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub address: IpAddr,
    /// The IPv4 address inside `address` that was judged, if any.
    pub via: Option<Ipv4Addr>,
    pub range: Range,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.address, self.range.describe())?;
        if let Some(v4) = self.via {
            write!(f, " (it carries the IPv4 address {v4})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// Why a webhook URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("webhook_url: {0}; set WEBHOOK_ALLOWED_NETWORKS to allow it")]
    Refused(Refused),
    #[error("webhook_url: {0}")]
    Invalid(String),
}

/// The networks a webhook may reach despite the special-purpose ranges
/// (`WEBHOOK_ALLOWED_NETWORKS`). Cloning is cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Arc<[IpNet]>,
}

impl AddressPolicy {
    pub fn new(allowed: &[IpNet]) -> Self {
        Self { allowed: allowed.into() }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Whether a webhook may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allows(ip) {
            return Ok(());
        }
        match ip {
            IpAddr::V4(v4) => judge_v4(v4).map_or(Ok(()), |range| Err(Refused { address: ip, via: None, range })),
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                // The operator may have allowed the IPv4 network it carries.
                Some(inner) if self.allows(IpAddr::V4(inner)) => Ok(()),
                Some(inner) => {
                    judge_v4(inner).map_or(Ok(()), |range| Err(Refused { address: ip, via: Some(inner), range }))
                }
                None => REFUSED_V6
                    .iter()
                    .find(|(net, _)| net.contains(&v6))
                    .map_or(Ok(()), |&(_, range)| Err(Refused { address: ip, via: None, range })),
            },
        }
    }

    /// Checks a webhook URL when a job is created: `http` or `https`, a host,
    /// no user or password (a URL such as `https://trusted.example@evil.example/`
    /// only looks like it goes to the first host), and a literal address
    /// outside the refused ranges. A host name is resolved and checked when
    /// the webhook is delivered, as its addresses may change until then.
    pub fn check_url(&self, url: &str) -> Result<(), UrlProblem> {
        let invalid = |problem: String| Err(UrlProblem::Invalid(problem));
        // Never echo the URL: its path or query may carry a token.
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return invalid(format!("not a valid URL ({e})")),
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return invalid(format!("scheme {:?} is not allowed; use http or https", parsed.scheme()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return invalid("a user name or password in the URL is not allowed".to_owned());
        }
        let ip = match parsed.host() {
            None => return invalid("the URL names no host".to_owned()),
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        self.check_ip(ip).map_err(UrlProblem::Refused)
    }
}

fn judge_v4(ip: Ipv4Addr) -> Option<Range> {
    REFUSED_V4.iter().find(|(net, _)| net.contains(&ip)).map(|&(_, range)| range)
}

/// Reads `WEBHOOK_ALLOWED_NETWORKS`: comma-separated CIDRs (`10.0.0.0/8`,
/// `fd00::/8`), or single addresses. Host bits are cleared, so `10.1.2.3/8`
/// means `10.0.0.0/8`.
pub fn parse_networks(value: &str) -> Result<Vec<IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not a network: expected CIDRs such as 10.0.0.0/8 or fd00::/8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &AddressPolicy, address: &str) -> Option<Range> {
        policy.check_ip(address.parse().unwrap()).err().map(|r| r.range)
    }

    #[test]
    fn special_purpose_addresses_are_refused_by_name() {
        let policy = AddressPolicy::default();
        for (address, range) in [
            ("0.0.0.0", Range::Unspecified),
            ("127.0.0.1", Range::Loopback),
            ("127.255.255.254", Range::Loopback),
            ("10.1.2.3", Range::Private),
            ("172.16.0.1", Range::Private),
            ("172.31.255.255", Range::Private),
            ("192.168.1.1", Range::Private),
            ("100.64.0.1", Range::Shared),
            ("100.127.255.255", Range::Shared),
            ("169.254.169.254", Range::LinkLocal),
            ("192.0.0.8", Range::Reserved),
            ("192.0.2.10", Range::Documentation),
            ("198.51.100.1", Range::Documentation),
            ("203.0.113.7", Range::Documentation),
            ("198.18.0.1", Range::Benchmarking),
            ("224.0.0.1", Range::Multicast),
            ("239.255.255.250", Range::Multicast),
            ("240.0.0.1", Range::Reserved),
            ("255.255.255.255", Range::Broadcast),
            ("::", Range::Unspecified),
            ("::1", Range::Loopback),
            ("::127.0.0.1", Range::Ipv4Compatible),
            ("fc00::1", Range::UniqueLocal),
            ("fd12:3456::1", Range::UniqueLocal),
            ("fec0::1", Range::UniqueLocal),
            ("fe80::1", Range::LinkLocal),
            ("ff02::1", Range::Multicast),
            ("2001:db8::1", Range::Documentation),
            ("3fff::1", Range::Documentation),
            ("100::1", Range::Reserved),
            ("2001::1", Range::Reserved),
            ("64:ff9b:1::1", Range::Private),
        ] {
            assert_eq!(refused(&policy, address), Some(range), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(refused(&policy, address), None, "{address}");
        }
    }

    #[test]
    fn ipv6_addresses_carrying_ipv4_are_judged_by_it() {
        let policy = AddressPolicy::default();
        for (address, inner, range) in [
            ("::ffff:127.0.0.1", "127.0.0.1", Range::Loopback),
            ("::ffff:169.254.169.254", "169.254.169.254", Range::LinkLocal),
            ("::ffff:10.0.0.1", "10.0.0.1", Range::Private),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254", Range::LinkLocal),
            ("2002:7f00:1::1", "127.0.0.1", Range::Loopback),
        ] {
            let refusal = policy.check_ip(address.parse().unwrap()).unwrap_err();
            assert_eq!((refusal.via, refusal.range), (Some(inner.parse().unwrap()), range), "{address}");
        }
        let shown = policy.check_ip("::ffff:127.0.0.1".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(shown, "::ffff:127.0.0.1 is a loopback address (it carries the IPv4 address 127.0.0.1)");
    }

    #[test]
    fn the_allow_list_lets_its_networks_through_and_nothing_else() {
        let policy = AddressPolicy::new(&parse_networks("127.0.0.0/8, 10.20.0.0/16,fd00::/8").unwrap());
        for address in ["127.0.0.1", "127.1.2.3", "10.20.30.40", "fd00::5", "::ffff:127.0.0.1"] {
            assert_eq!(refused(&policy, address), None, "{address}");
        }
        for (address, range) in [
            ("10.21.0.1", Range::Private),
            ("169.254.169.254", Range::LinkLocal),
            ("::1", Range::Loopback),
            ("fc00::1", Range::UniqueLocal),
        ] {
            assert_eq!(refused(&policy, address), Some(range), "{address}");
        }
    }

    #[test]
    fn allowed_networks_parse_like_cidrs() {
        let nets = parse_networks(" 10.1.2.3/8 ,, 192.168.5.5, ::1 ,fd00::/8").unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.5.5/32", "::1/128", "fd00::/8"]);
        assert_eq!(parse_networks("").unwrap(), []);
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/8;192.168.0.0/16", "::1/129", "10/8"] {
            let err = parse_networks(bad).unwrap_err();
            assert!(err.contains("is not a network"), "{bad}: {err}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_literal_addresses() {
        let policy = AddressPolicy::default();
        for ok in [
            "https://hooks.example.com/job?token=t",
            "http://hooks.example.com:8080/",
            "http://localhost:9000/hook",
            "https://8.8.8.8/hook",
            "http://[2606:4700:4700::1111]/hook",
        ] {
            assert_eq!(policy.check_url(ok), Ok(()), "{ok}");
        }
        let problem = |url: &str| policy.check_url(url).unwrap_err().to_string();
        assert_eq!(
            problem("http://127.0.0.1:8080/admin"),
            "webhook_url: 127.0.0.1 is a loopback address; set WEBHOOK_ALLOWED_NETWORKS to allow it"
        );
        for (url, expected) in [
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
            ("http://[::1]:8080/", "::1 is a loopback address"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback address"),
            ("http://10.0.0.5/", "10.0.0.5 is a private address"),
            // Other spellings of an IPv4 address are read as browsers read them.
            ("http://2130706433/", "127.0.0.1 is a loopback address"),
            ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
            ("http://0/", "0.0.0.0 is an unspecified address"),
            ("ftp://hooks.example.com/x", "scheme \"ftp\" is not allowed"),
            ("file:///etc/passwd", "scheme \"file\" is not allowed"),
            ("https://hooks.example.com@127.0.0.1/", "user name or password"),
            ("https://user:s3cret@hooks.example.com/", "user name or password"),
            ("not a url s3cret", "not a valid URL"),
        ] {
            let shown = problem(url);
            assert!(shown.starts_with("webhook_url: ") && shown.contains(expected), "{url}: {shown}");
            assert!(!shown.contains("s3cret"), "{url}: {shown}");
        }
        let allowed = AddressPolicy::new(&parse_networks("127.0.0.0/8").unwrap());
        assert_eq!(allowed.check_url("http://127.0.0.1:8080/hook"), Ok(()));
        assert!(allowed.check_url("http://[::1]:8080/hook").is_err());
    }
}
