//! Host names as requests give them (`Host`, `X-Forwarded-Host`), and the rule of which of
//! them name this server: the defence against DNS rebinding that `guard.rs` applies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which names in `Host` a request may use.
///
/// IP addresses are always accepted: a page can only be of the same origin as an address if it
/// is served from that address, that is by Tandem itself, so no rebinding goes through one.
/// Loopback names (`localhost` and `*.localhost`, which browsers resolve to loopback without
/// asking DNS) are accepted for the same reason. Other names must be given with
/// `--public-host`. Without access control every request is held to this, since a rebinding
/// page could otherwise read and edit everything; with access control on, only once public
/// names are given: the page would hold no credential, so any name is accepted until the
/// operator says which ones the server is reached under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostRule {
    /// Whether names are checked at all.
    enforced: bool,
    /// The `--public-host` names, lower case, without a trailing dot.
    public: Vec<String>,
}

impl HostRule {
    /// The rule for `--public-host` values (as [`public_host_arg`] lets them through) on a server
    /// with or without access control.
    pub(crate) fn new(public_hosts: &[String], access_control: bool) -> Self {
        let public: Vec<String> = public_hosts
            .iter()
            .filter_map(|value| match parse_host(value) {
                Some(Host::Name(name)) => Some(name),
                _ => None,
            })
            .collect();
        Self {
            enforced: !access_control || !public.is_empty(),
            public,
        }
    }

    /// Whether names are checked at all.
    pub(crate) fn enforced(&self) -> bool {
        self.enforced
    }

    /// Whether `value`, a `Host` or `X-Forwarded-Host` value with or without a port, names
    /// this server. Ports are not compared: a rebinding page reaches the same port as any
    /// other client, and proxies and port mappings change it.
    pub(crate) fn allows(&self, value: &str) -> bool {
        if !self.enforced {
            return true;
        }
        match parse_host(value) {
            Some(Host::Ip(_)) => true,
            Some(Host::Name(name)) => {
                name == "localhost" || name.ends_with(".localhost") || self.public.contains(&name)
            }
            None => false,
        }
    }
}

/// Checks one `--public-host` value for the command line: a host name without a port. An
/// empty one (as an empty environment variable gives) names nothing.
pub(crate) fn public_host_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    match parse_host(value) {
        Some(Host::Name(name)) if !value.contains(':') => Ok(name),
        Some(Host::Ip(_)) => Err(format!(
            "`{value}` is an IP address: addresses are always accepted, give host names"
        )),
        _ => Err(format!(
            "`{value}` is not a host name (give the name alone, like docs.example.com)"
        )),
    }
}

/// A host as a request names it.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// A name, lower case, without a trailing dot.
    Name(String),
}

/// Reads a `Host` value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:8080`); `None` if it is
/// none of these.
fn parse_host(value: &str) -> Option<Host> {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| ip.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => value,
    };
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then_some(Host::Name(name))
}

/// A port in a `Host` value: up to five digits (RFC 3986 allows an empty one).
fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(public: &[&str], access_control: bool) -> HostRule {
        let public: Vec<String> = public
            .iter()
            .map(|p| public_host_arg(p).expect("valid name"))
            .collect();
        HostRule::new(&public, access_control)
    }

    #[test]
    fn without_access_control_only_addresses_loopback_and_public_names_pass() {
        let open = rule(&["Docs.Example.com"], false);
        for host in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[2001:db8::1]",
            "localhost:8080",
            "LOCALHOST",
            "localhost.",
            "app.localhost:3000",
            "docs.example.com",
            "docs.example.com.:443",
        ] {
            assert!(open.allows(host), "{host}");
        }
        for host in [
            "rebind.evil.example:8080",
            "localhost.evil.example",
            "evillocalhost",
            "example.com",
            "",
            "docs.example.com:http",
            "docs..example.com",
            "[::1",
            "a b",
        ] {
            assert!(!open.allows(host), "{host}");
        }
        assert!(!rule(&[], false).allows("docs.example.com"));
    }

    #[test]
    fn with_access_control_names_are_checked_once_some_are_given() {
        assert!(!rule(&[], true).enforced());
        assert!(rule(&[], true).allows("anything.example"));
        let named = rule(&["docs.example.com"], true);
        assert!(named.allows("docs.example.com:443"));
        assert!(named.allows("192.0.2.7"));
        assert!(!named.allows("anything.example"));
    }

    #[test]
    fn public_hosts_are_bare_names() {
        assert_eq!(
            public_host_arg(" Docs.Example.COM. ").as_deref(),
            Ok("docs.example.com")
        );
        assert_eq!(public_host_arg("").as_deref(), Ok(""));
        for bad in [
            "docs.example.com:443",
            "https://docs.example.com",
            "192.0.2.7",
            "a/b",
        ] {
            assert!(public_host_arg(bad).is_err(), "{bad}");
        }
        // An empty environment variable names nothing, so the rule stays as without names.
        assert_eq!(rule(&[""], true), rule(&[], true));
    }
}
