//! Opening the TCP connection to a relay: directly (which also works under `torsocks`), or
//! through a SOCKS5 proxy that resolves host names itself.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_socks::tcp::Socks5Stream;

use crate::error::{AddressError, SessionError};

/// The relay's port when an address gives none (the relay listens on it by default).
pub const DEFAULT_PORT: u16 = 7878;

/// Longest host name accepted (DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// A relay or proxy address: a host name or IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name (lower case) or IP literal, without IPv6 brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').enumerate().all(|(i, label)| {
            // A trailing dot (fully qualified name) leaves one empty last label.
            (label.is_empty() && i > 0 && host.ends_with('.') && host.len() > 1)
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

impl FromStr for HostPort {
    type Err = AddressError;

    /// Parses `HOST:PORT` or `[IPV6]:PORT`.
    fn from_str(s: &str) -> Result<Self, AddressError> {
        let bad = |why: &'static str| AddressError { input: crate::display::neutralize_short(s), why };
        if s.len() > MAX_HOST_LEN + 10 {
            return Err(bad("it is too long"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest.split_once("]:").ok_or_else(|| bad("expected [IPV6]:PORT"))?;
            let addr: Ipv6Addr = v6.parse().map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            (addr.to_string(), port)
        } else {
            let (host, port) =
                s.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT, e.g. example.org:7878"))?;
            if host.contains(':') {
                return Err(bad("write IPv6 addresses in brackets: [::1]:7878"));
            }
            if !valid_hostname(host) {
                return Err(bad("the host must be a name (letters, digits, - and .) or an IP address"));
            }
            (host.to_ascii_lowercase(), port)
        };
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Parses a relay address as typed by a user: `HOST:PORT`, `[IPV6]:PORT`, or a host
    /// alone, which gets the relay's default port `DEFAULT_PORT`.
    pub fn parse_relay(s: &str) -> Result<Self, AddressError> {
        let bare_v6 = s.starts_with('[') && s.ends_with(']');
        let bare_host = !s.starts_with('[') && !s.contains(':') && !s.is_empty();
        if bare_v6 || bare_host {
            return format!("{s}:{DEFAULT_PORT}")
                .parse()
                .map_err(|e: AddressError| AddressError { input: crate::display::neutralize_short(s), ..e });
        }
        s.parse()
    }

    /// Whether the host is an IP literal (no name resolution needed).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

/// Most addresses one relay service may be given (an invite, `--relay`, a config entry).
pub const MAX_RELAY_ADDRS: usize = 8;

/// The addresses of one relay service: the nodes of a relay cluster, which share one relay
/// key, or a single relay's one address. Never empty, at most `MAX_RELAY_ADDRS`, no address
/// twice. Written `HOST:PORT,HOST2:PORT2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayAddrs(Vec<HostPort>);

impl RelayAddrs {
    /// Parses a comma-separated list, each address with `one`: `HostPort::from_str` (strict
    /// `HOST:PORT`, as invites have it) or `HostPort::parse_relay` (the port may be left out).
    /// One address alone is parsed, and refused, exactly as `one` does.
    pub fn parse_with(
        s: &str,
        one: impl Fn(&str) -> Result<HostPort, AddressError>,
    ) -> Result<Self, AddressError> {
        if !s.contains(',') {
            return Ok(RelayAddrs(vec![one(s)?]));
        }
        let bad = |why: &'static str| AddressError { input: crate::display::neutralize_short(s), why };
        let parts: Vec<&str> = s.split(',').collect();
        if parts.len() > MAX_RELAY_ADDRS {
            return Err(bad("a relay is given at most 8 addresses, separated by commas"));
        }
        let mut addrs: Vec<HostPort> = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                return Err(bad("an address is missing between commas (HOST:PORT,HOST2:PORT2)"));
            }
            let addr = one(part)?;
            if addrs.contains(&addr) {
                return Err(bad("the same address is listed twice"));
            }
            addrs.push(addr);
        }
        Ok(RelayAddrs(addrs))
    }

    /// Parses addresses as typed by a user (`--relay`, the config file): each `HOST:PORT`,
    /// `[IPV6]:PORT` or a host alone (the default port), separated by commas.
    pub fn parse_relays(s: &str) -> Result<Self, AddressError> {
        Self::parse_with(s, HostPort::parse_relay)
    }

    /// The first address, where a session starts.
    pub fn first(&self) -> &HostPort {
        &self.0[0]
    }

    /// The address at `index`, counted round the list.
    pub fn get(&self, index: usize) -> &HostPort {
        &self.0[index % self.0.len()]
    }

    /// All addresses, in the order given.
    pub fn as_slice(&self) -> &[HostPort] {
        &self.0
    }

    /// How many addresses (at least 1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl From<HostPort> for RelayAddrs {
    fn from(addr: HostPort) -> Self {
        RelayAddrs(vec![addr])
    }
}

impl FromStr for RelayAddrs {
    type Err = AddressError;

    /// Parses `HOST:PORT[,HOST2:PORT2...]`, each address strictly (with its port).
    fn from_str(s: &str) -> Result<Self, AddressError> {
        Self::parse_with(s, str::parse)
    }
}

impl fmt::Display for RelayAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

/// Which address of a `RelayAddrs` the next connection attempt uses, and when to wait.
///
/// Sans-IO: a session starts at the first address; a failed attempt or a lost connection
/// moves to the next address, round the list, so the round after a loss starts with the
/// address after the one that last worked and ends with it. The session's backoff is paid
/// once per full round, not per address: a dead node of a cluster costs one quick failed
/// connect, and a single address backs off after each failure exactly as before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    len: usize,
    current: usize,
}

impl Rotation {
    /// Starts at the first of `len` addresses (`len` 0 is taken as 1).
    pub fn new(len: usize) -> Self {
        Rotation { len: len.max(1), current: 0 }
    }

    /// Starts at address `index` of `len` (the one that last worked).
    pub fn starting_at(len: usize, index: usize) -> Self {
        let len = len.max(1);
        Rotation { len, current: index % len }
    }

    /// The index of the address to use now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The address in use failed (`failures`: failed attempts since the last working
    /// connection, 0 for the loss of a working one): moves to the next address and says how
    /// to wait before trying it: `Some(round)` to apply the backoff for `round` (a full
    /// round has just ended), `None` to try at once.
    pub fn failed(&mut self, failures: u32) -> Option<u32> {
        self.current = (self.current + 1) % self.len;
        let len = u32::try_from(self.len).unwrap_or(u32::MAX);
        failures.is_multiple_of(len).then_some(failures / len)
    }
}

/// A SOCKS5 proxy given as `socks5h://HOST:PORT` (or `socks5://`, treated the same way:
/// with a proxy set, the client never resolves the relay's name itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's address.
    pub addr: HostPort,
}

impl FromStr for Proxy {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let rest = s.strip_prefix("socks5h://").or_else(|| s.strip_prefix("socks5://")).ok_or_else(|| {
            AddressError {
                input: crate::display::neutralize_short(s),
                why: "a proxy must be written socks5h://HOST:PORT (e.g. socks5h://127.0.0.1:9050 for Tor)",
            }
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        Ok(Proxy { addr: rest.parse()? })
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socks5h://{}", self.addr)
    }
}

/// Opens a TCP connection to `target`, through `proxy` if given, with TCP_NODELAY set.
///
/// With a proxy, the host name is sent to the proxy as a name (SOCKS5 address type 3) and
/// never resolved locally; only the proxy's own address is resolved, as any client must.
pub async fn connect(
    target: &HostPort,
    proxy: Option<&Proxy>,
    limit: Duration,
) -> Result<TcpStream, SessionError> {
    let attempt = async {
        let stream = match proxy {
            None => {
                // A blocking connect on a helper thread, handed to tokio afterwards: the plain
                // getaddrinfo + connect sequence that `torsocks` intercepts reliably.
                let (host, port) = (target.host.clone(), target.port);
                let connect_err = |source| SessionError::Connect { addr: target.to_string(), source };
                let std_stream =
                    tokio::task::spawn_blocking(move || std::net::TcpStream::connect((host.as_str(), port)))
                        .await
                        .map_err(|e| connect_err(std::io::Error::other(e)))?
                        .map_err(connect_err)?;
                std_stream.set_nonblocking(true).map_err(connect_err)?;
                TcpStream::from_std(std_stream).map_err(connect_err)?
            }
            Some(proxy) => {
                let proxy_addr = (proxy.addr.host.as_str(), proxy.addr.port);
                Socks5Stream::connect(proxy_addr, (target.host.as_str(), target.port))
                    .await
                    .map_err(|e| SessionError::Proxy {
                        proxy: proxy.to_string(),
                        addr: target.to_string(),
                        detail: e.to_string(),
                    })?
                    .into_inner()
            }
        };
        stream
            .set_nodelay(true)
            .map_err(|source| SessionError::Connect { addr: target.to_string(), source })?;
        Ok(stream)
    };
    tokio::time::timeout(limit, attempt).await.map_err(|_| SessionError::Timeout {
        what: "connecting",
        addr: target.to_string(),
        secs: limit.as_secs(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_address_lists() {
        let one = RelayAddrs::parse_relays("Example.org").unwrap();
        assert_eq!(one.as_slice(), [HostPort { host: "example.org".into(), port: DEFAULT_PORT }]);
        assert_eq!(one.to_string(), "example.org:7878");
        let two = RelayAddrs::parse_relays("a.example:1,[::1]:2").unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two.to_string(), "a.example:1,[::1]:2");
        assert_eq!(two.to_string().parse::<RelayAddrs>().unwrap(), two, "the written form parses back");
        assert_eq!(two.get(3), two.get(1));
        let eight = (1..=8).map(|p| format!("h:{p}")).collect::<Vec<_>>().join(",");
        assert_eq!(eight.parse::<RelayAddrs>().unwrap().len(), MAX_RELAY_ADDRS);
        // One address alone is refused exactly as before, with the same words.
        let alone = "h:0".parse::<RelayAddrs>().unwrap_err();
        assert_eq!(alone, "h:0".parse::<HostPort>().unwrap_err());
        let cases = [
            (format!("{eight},h:9"), "at most 8"),
            ("h:1,H:1".to_owned(), "listed twice"),
            ("h:1,".to_owned(), "missing between commas"),
            (",h:1".to_owned(), "missing between commas"),
            ("h:1,,h:2".to_owned(), "missing between commas"),
            ("h:1,h".to_owned(), "HOST:PORT"),
            ("h:1,h:99999".to_owned(), "port"),
        ];
        for (input, why) in cases {
            let err = input.parse::<RelayAddrs>().unwrap_err();
            assert!(err.why.contains(why), "{input}: {err}");
        }
        assert!(RelayAddrs::parse_relays("h,h:7878").is_err(), "the default port makes them equal");
    }

    #[test]
    fn rotation_pays_the_backoff_once_per_round() {
        // One address: every failure is a full round, backed off as before (0, 1, 2, ...).
        let mut one = Rotation::new(1);
        assert_eq!((0..4).map(|f| one.failed(f)).collect::<Vec<_>>(), [Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(one.current(), 0);
        // Three addresses, working on the second: the loss moves to the third after the
        // first backoff; the other two are tried at once; then the next round backs off.
        let mut three = Rotation::starting_at(3, 1);
        assert_eq!(three.current(), 1);
        let mut seen = Vec::new();
        for failures in 0..7 {
            let wait = three.failed(failures);
            seen.push((three.current(), wait));
        }
        assert_eq!(
            seen,
            [(2, Some(0)), (0, None), (1, None), (2, Some(1)), (0, None), (1, None), (2, Some(2))]
        );
        assert_eq!(Rotation::starting_at(2, 5).current(), 1);
        assert_eq!(Rotation::new(0).failed(0), Some(0), "no address is taken as one");
    }

    #[test]
    fn host_port_forms() {
        let hp: HostPort = "Example.ORG:7777".parse().unwrap();
        assert_eq!(hp, HostPort { host: "example.org".into(), port: 7777 });
        assert_eq!(hp.to_string(), "example.org:7777");
        let v6: HostPort = "[::1]:80".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:80");
        assert!(v6.is_ip());
        let onion: HostPort = "abcdefghijklmnop.onion:7777".parse().unwrap();
        assert!(!onion.is_ip());
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            "host:+80",
            ":80",
            "a b:80",
            "::1:80",
            "[::1]80",
            "[zz]:80",
            "host:80/x",
            "user@host:80",
            "-host:80",
            "host\u{1b}:80",
            "h..x:80",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!(HostPort::parse_relay("Example.org").unwrap().to_string(), "example.org:7878");
        assert_eq!(HostPort::parse_relay("127.0.0.1").unwrap().to_string(), "127.0.0.1:7878");
        assert_eq!(HostPort::parse_relay("[::1]").unwrap().to_string(), "[::1]:7878");
        assert_eq!(HostPort::parse_relay("h:99").unwrap().to_string(), "h:99");
        for bad in ["", "h:", "a b", "::1", "[zz]"] {
            assert!(HostPort::parse_relay(bad).is_err(), "{bad:?} should be refused");
        }
        assert!("host".parse::<HostPort>().unwrap_err().to_string().contains("example.org:7878"));
        let err = "host\u{1b}[2J:80".parse::<HostPort>().unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_addresses_never_panic(s in "\\PC{0,300}") {
            let _ = s.parse::<HostPort>();
            let _ = s.parse::<Proxy>();
        }
    }

    #[test]
    fn proxy_forms() {
        let p: Proxy = "socks5h://127.0.0.1:9050".parse().unwrap();
        assert_eq!(p.addr.port, 9050);
        assert_eq!(p.to_string(), "socks5h://127.0.0.1:9050");
        assert!("socks5://localhost:1080/".parse::<Proxy>().is_ok());
        assert!("http://127.0.0.1:8080".parse::<Proxy>().is_err());
        assert!("127.0.0.1:9050".parse::<Proxy>().is_err());
    }
}
