//! The `Host` allow-list that defeats DNS rebinding: a page on `evil.example` whose name the
//! attacker re-points at 127.0.0.1 is same-origin with itself, so the browser lets it call
//! the admin API, but every request it makes says `Host: evil.example`. Only names that
//! cannot be rebound by a stranger pass: loopback names and addresses, the listen address, any
//! IP literal when listening on every interface (a literal is never looked up, so it cannot
//! be rebound), and the names the operator lists in `host.admin_hosts`.

use std::net::IpAddr;

/// The names and addresses the admin API answers to.
#[derive(Debug, Clone)]
pub(crate) struct HostAllowList {
    listen: IpAddr,
    names: Vec<String>,
}

impl HostAllowList {
    /// The allow-list of a listener on `listen` plus the operator's `extra` names.
    pub(crate) fn new(listen: IpAddr, extra: &[String]) -> HostAllowList {
        HostAllowList {
            listen,
            names: extra.iter().map(|name| normalise(name)).collect(),
        }
    }

    /// Whether a request whose `Host` header is `header` may be answered.
    pub(crate) fn allows(&self, header: &str) -> bool {
        let Some(host) = host_part(header) else {
            return false;
        };
        let host = normalise(host);
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip.is_loopback()
                || ip.to_canonical().is_loopback()
                || ip == self.listen
                || self.listen.is_unspecified()
                || self.names.iter().any(|name| name.parse() == Ok(ip));
        }
        self.names.contains(&host)
    }
}

/// Lower case, without a trailing dot (`Example.COM.` and `example.com` are one name).
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `Host` header without its port; an IPv6 literal loses its brackets. `None`
/// for a header that is not `host[:port]`.
fn host_part(header: &str) -> Option<&str> {
    let header = header.trim();
    if let Some(rest) = header.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        return (after.is_empty() || port(after.strip_prefix(':')?)).then_some(literal);
    }
    let host = match header.rsplit_once(':') {
        Some((host, after)) if port(after) => host,
        Some(_) => return None,
        None => header,
    };
    (!host.is_empty() && !host.contains(['/', '@', ' ', ':'])).then_some(host)
}

fn port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_listener(extra: &[&str]) -> HostAllowList {
        let extra: Vec<String> = extra.iter().map(std::string::ToString::to_string).collect();
        HostAllowList::new(IpAddr::from([127, 0, 0, 1]), &extra)
    }

    #[test]
    fn loopback_names_and_addresses_pass_with_or_without_a_port() {
        let list = loopback_listener(&[]);
        for host in [
            "localhost",
            "LOCALHOST:7878",
            "localhost.:7878",
            "127.0.0.1",
            "127.0.0.1:7878",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:7878",
            "[::ffff:127.0.0.1]:7878",
        ] {
            assert!(list.allows(host), "{host}");
        }
    }

    #[test]
    fn foreign_names_and_malformed_headers_are_refused() {
        let list = loopback_listener(&["conduit.internal"]);
        for host in [
            "evil.example",
            "evil.example:7878",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.5:7878",
            "[::2]:7878",
            "",
            "localhost:port",
            "user@localhost",
            "[::1",
            "[::1]x",
            "conduit.internal.evil.example",
        ] {
            assert!(!list.allows(host), "{host}");
        }
        assert!(list.allows("Conduit.Internal:7878"));
    }

    #[test]
    fn the_listen_address_passes_and_every_interface_admits_ip_literals_but_not_names() {
        let specific = HostAllowList::new(IpAddr::from([10, 0, 0, 5]), &[]);
        assert!(specific.allows("10.0.0.5:7878"));
        assert!(!specific.allows("10.0.0.6:7878"));
        let every = HostAllowList::new(IpAddr::from([0, 0, 0, 0]), &[]);
        assert!(every.allows("10.0.0.6:7878"));
        assert!(every.allows("[fd00::1]:7878"));
        assert!(!every.allows("evil.example:7878"));
        let listed = HostAllowList::new(IpAddr::from([0, 0, 0, 0]), &["admin.example".into()]);
        assert!(listed.allows("admin.example"));
    }
}
