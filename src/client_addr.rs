//! Which address a request comes from, for the per-address connection limit and the logs, and
//! which host it was addressed to, for the origin and host rules.
//!
//! A socket's peer is the client unless it is a proxy the operator trusts (`--trusted-proxy`).
//! Then the client is named by `X-Forwarded-For`, which each proxy extends with the address it
//! received the request from: read from the right, the first address that is not a trusted proxy
//! is the client. Everything left of it was written by that client and is not believed.
//!
//! Likewise the host the client asked for is `Host`, unless a trusted proxy says otherwise in
//! `X-Forwarded-Host`. From anyone else that header is the client's own say and is ignored
//! (actix's `ConnectionInfo` believes it, and `Forwarded`, from anyone: it is not used).

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderMap};
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The proxies `--trusted-proxy` names (values [`proxy_arg`] let through).
    pub(crate) fn from_args(values: &[String]) -> Self {
        Self(
            values
                .iter()
                .filter_map(|value| parse_proxy(value).ok())
                .collect(),
        )
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The host a trusted proxy at `peer` says the client asked for: the last `X-Forwarded-Host`
    /// entry, the one the proxy itself wrote (a proxy that appends keeps what the client sent
    /// to its left). `None` from any other peer, or when there is no readable entry.
    pub(crate) fn forwarded_host<'h>(
        &self,
        peer: IpAddr,
        headers: &'h HeaderMap,
    ) -> Option<&'h str> {
        if !self.trusts(peer.to_canonical()) {
            return None;
        }
        let last = headers.get_all("x-forwarded-host").last()?;
        let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
        (!entry.is_empty()).then_some(entry)
    }

    /// The client behind a request that arrived from `peer` with `headers`.
    ///
    /// The peer itself when it is not trusted. Otherwise the rightmost `X-Forwarded-For` entry
    /// that is not trusted; if an entry cannot be read (`unknown`, a name, garbage) before one
    /// is found, the proxy that wrote it, the last address known for certain.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut nearest = peer;
        // Every X-Forwarded-For line, in order, read as one list from its right end.
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .collect();
        for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
            let Some(ip) = parse_entry(entry) else {
                return nearest;
            };
            if !self.trusts(ip) {
                return ip;
            }
            nearest = ip;
        }
        nearest
    }
}

/// The host a request was addressed to: from a trusted proxy, the `X-Forwarded-Host` it wrote;
/// otherwise the `Host` header, or the authority of an absolute request target. Without
/// `proxies` (no application state) `X-Forwarded-Host` is never believed.
pub(crate) fn addressed_host<'r>(
    req: &'r HttpRequest,
    proxies: Option<&TrustedProxies>,
) -> Option<&'r str> {
    let headers = req.headers();
    if let (Some(proxies), Some(peer)) = (proxies, req.peer_addr())
        && let Some(forwarded) = proxies.forwarded_host(peer.ip(), headers)
    {
        return Some(forwarded);
    }
    match headers.get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// Checks one `--trusted-proxy` value for the command line; an empty one (as an empty
/// environment variable gives) names no proxy.
pub(crate) fn proxy_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() {
        parse_proxy(value)?;
    }
    Ok(value.to_string())
}

/// Parses a proxy address or network, as given to `--trusted-proxy`: `10.0.0.0/8`,
/// `192.168.1.5`, `fd00::/8`, `::1`.
pub(crate) fn parse_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    if let Ok(net) = IpNet::from_str(value) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(value)
        .map(IpNet::from)
        .map_err(|_| format!("`{value}` is neither an IP address nor a network like 10.0.0.0/8"))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = IpAddr::from_str(entry) {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return Ipv6Addr::from_str(ip)
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The key one client's connections are counted under: its IPv4 address, or its IPv6 /64 (one
/// host is routinely given a whole /64, so single IPv6 addresses cost an attacker nothing).
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(
            list.iter()
                .map(|p| parse_proxy(p).expect("proxy"))
                .collect(),
        )
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(line).expect("header"),
            );
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        let claims = forwarded(&["203.0.113.9"]);
        assert_eq!(none.client(ip("198.51.100.7"), &claims), ip("198.51.100.7"));
        let other = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            other.client(ip("198.51.100.7"), &claims),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the first entry; the outer proxy (10.1.1.1) appended the real one,
        // and the inner proxy appended the outer one.
        let headers = forwarded(&["6.6.6.6, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &headers), ip("203.0.113.9"));
        // The same list over two header lines.
        let split = forwarded(&["6.6.6.6", "203.0.113.9:4711, 10.1.1.1"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &split), ip("203.0.113.9"));
        let v6 = forwarded(&["[2001:db8::17]:443"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &v6), ip("2001:db8::17"));
        // An IPv4 peer seen through an IPv6 socket is still the trusted proxy.
        let mapped = ip("::ffff:127.0.0.1");
        assert_eq!(
            trusted.client(mapped, &forwarded(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn without_a_readable_entry_the_nearest_known_proxy_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        let unknown = forwarded(&["203.0.113.9, unknown, 10.1.1.1"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &unknown), ip("10.1.1.1"));
        let all_trusted = forwarded(&["10.2.2.2, 10.1.1.1"]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &all_trusted),
            ip("10.2.2.2")
        );
    }

    #[test]
    fn only_a_trusted_proxy_names_the_host() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append(
            HeaderName::from_static("x-forwarded-host"),
            HeaderValue::from_static("localhost:8080"),
        );
        headers.append(
            HeaderName::from_static("x-forwarded-host"),
            HeaderValue::from_static("forged.example, docs.example.com"),
        );
        assert_eq!(
            trusted.forwarded_host(ip("10.1.1.1"), &headers),
            Some("docs.example.com")
        );
        assert_eq!(trusted.forwarded_host(ip("198.51.100.7"), &headers), None);
        assert_eq!(
            trusted.forwarded_host(ip("10.1.1.1"), &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn proxies_parse_as_addresses_or_networks() {
        assert_eq!(
            parse_proxy("10.1.2.3/8").expect("net"),
            "10.0.0.0/8".parse::<IpNet>().expect("net")
        );
        assert_eq!(
            parse_proxy(" ::1 ").expect("ip"),
            "::1/128".parse::<IpNet>().expect("net")
        );
        let error = parse_proxy("proxy.local").expect_err("not an address");
        assert!(error.contains("proxy.local"), "{error}");
        assert!(proxy_arg("proxy.local").is_err());
        // An empty environment variable names no proxy.
        assert_eq!(proxy_arg(" ").as_deref(), Ok(""));
        let args = ["".to_string(), "10.0.0.0/8".to_string()];
        assert_eq!(TrustedProxies::from_args(&args), proxies(&["10.0.0.0/8"]));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
    }
}
