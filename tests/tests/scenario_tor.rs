//! Scenario 5, Tor for real without the Tor network: a private Tor network on 127.0.0.1
//! (`tests/tor/private-tor-net`, from Debian's `tor`) publishes the relay, bound to 127.0.0.1
//! as docs/RELAY.md tells operators, as an onion service. A member on clearnet chats with
//! (a) `chatroom --proxy socks5h://127.0.0.1:SOCKSPORT` and (b) `torsocks chatroom`, both
//! joining by the `.onion` address, which only Tor can reach, and (c) a protocol 2 (MLS) room
//! entered through the onion address and the proxy. The network is started once
//! for both; a guard stops every tor daemon even when the test fails, and the daemons also
//! exit on their own when the test process dies (`__OwningControllerProcess`).
//!
//! The quick path: `--proxy` through microsocks bound to 127.0.0.2 for its outgoing
//! connections, so the relay's log shows that the proxy carried the connection.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chatroom_e2e::{random_hex, Home, Microsocks, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
/// The whole Tor test must finish within this.
const TOR_BUDGET: Duration = Duration::from_secs(360);
/// Waits for one step over Tor (circuits to an onion service are slow to build).
const TOR_STEP: Duration = Duration::from_secs(60);
/// The onion service's virtual port, as in docs/RELAY.md.
const ONION_PORT: u16 = 7878;

fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tor/private-tor-net")
}

/// Stops the private Tor network when dropped, whatever happened.
struct TorNet {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl TorNet {
    fn start(service_port: u16, timeout: Duration) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let net_dir = dir.path().join("net");
        // The guard exists before the daemons do, so a failure below still stops them.
        let mut net = TorNet { dir, env: Vec::new() };
        let out = Command::new(harness())
            .arg("start")
            .arg(&net_dir)
            .args(["--service-port", &format!("127.0.0.1:{service_port}")])
            .args(["--onion-port", &ONION_PORT.to_string()])
            .args(["--timeout", &timeout.as_secs().to_string()])
            .args(["--owner-pid", &std::process::id().to_string()])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", harness().display()))?;
        if !out.status.success() {
            return Err(format!(
                "private-tor-net start failed ({}); install tor with `apt-get install -y tor` (.ci/run does):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        net.env = String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(net)
    }

    fn get(&self, key: &str) -> Result<&str, Box<dyn Error + Send + Sync>> {
        Ok(self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).ok_or(format!("no {key}"))?)
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        let _ = Command::new(harness()).arg("stop").arg(self.dir.path().join("net")).status();
    }
}

#[test]
fn members_join_by_onion_address_through_socks_and_under_torsocks() -> TestResult {
    let started = Instant::now();
    let deadline = started + TOR_BUDGET;
    // Each step waits at most TOR_STEP, and never past the whole test's budget.
    let step = || TOR_STEP.min(deadline.saturating_duration_since(Instant::now()));
    let relay_dir = tempfile::tempdir()?;
    // docs/RELAY.md: keep the relay on loopback behind the onion service, with the
    // per-address limits raised because every Tor user arrives from 127.0.0.1.
    let relay = Relay::start_with(
        relay_dir.path(),
        "127.0.0.1:0",
        &[
            "--max-unauthenticated-per-ip",
            "1024",
            "--ip-failures-slow",
            "1000",
            "--ip-failures-lockout",
            "100000",
        ],
    )?;
    let net = TorNet::start(relay.addr.port(), TOR_BUDGET / 3)?;
    let onion = net.get("ONION")?;
    assert!(onion.ends_with(".onion") && onion.len() == 62, "{onion}");
    assert_eq!(net.get("ONION_PORT")?, ONION_PORT.to_string());
    let proxy = net.get("SOCKS_PROXY")?.to_owned();
    let torsocks_conf = PathBuf::from(net.get("TORSOCKS_CONF")?);
    let torsocks_conf_text = std::fs::read_to_string(&torsocks_conf)?;
    assert!(torsocks_conf_text.contains("AllowOutboundLocalhost 0"), "torsocks may not shortcut loopback");
    eprintln!("private Tor network ready after {}s", net.get("READY_SECS")?);

    let clearnet = relay.invite("onion");
    let via_onion = format!("chatroom://{}@{onion}:{ONION_PORT}/onion", relay.fingerprint);
    let homes: Vec<Home> = (0..3).map(|_| Home::protocol_1()).collect::<Result<_, _>>()?;

    let mut alice = homes[0].member(&clearnet, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;

    // (a) --proxy socks5h://127.0.0.1:SOCKSPORT, the .onion name handed to Tor.
    let mut bob = homes[1].member(&via_onion, "bob", PASSWORD, false, &["--proxy", &proxy])?;
    bob.stderr.expect_within(&format!("connecting to {onion}:{ONION_PORT} via {proxy}"), step())?;
    bob.stderr.expect_within("now live", step())?;
    alice.stderr.expect("bob joined")?;

    // (b) The unmodified client under torsocks, pointed at the same SocksPort.
    let pw = homes[2].password_file("carol.pass", PASSWORD)?;
    let pw = pw.to_str().ok_or("path")?.to_owned();
    let mut carol = homes[2].spawn_wrapped(
        "carol",
        "torsocks",
        &[("TORSOCKS_CONF_FILE", torsocks_conf.as_path())],
        &[&via_onion, "--nick", "carol", "--password-file", &pw],
    )?;
    carol.stderr.expect_within(&format!("connecting to {onion}:{ONION_PORT}"), step())?;
    carol.stderr.expect_within("now live", step())?;
    alice.stderr.expect("carol joined")?;

    // Messages both ways between clearnet and both Tor members.
    let (a, b, c) = (random_hex(6), random_hex(6), random_hex(6));
    alice.line(&format!("from clearnet {a}"))?;
    bob.stdout.expect_within(&format!("<alice> from clearnet {a}"), step())?;
    carol.stdout.expect_within(&format!("<alice> from clearnet {a}"), step())?;
    bob.line(&format!("from socks {b}"))?;
    alice.stdout.expect_within(&format!("<bob> from socks {b}"), step())?;
    carol.stdout.expect_within(&format!("<bob> from socks {b}"), step())?;
    carol.line(&format!("from torsocks {c}"))?;
    alice.stdout.expect_within(&format!("<carol> from torsocks {c}"), step())?;
    bob.stdout.expect_within(&format!("<carol> from torsocks {c}"), step())?;

    for client in [&mut bob, &mut carol, &mut alice] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    // (c) Protocol 2 (MLS) over the same onion service: an entry by external commit through
    // Tor, then messages both ways.
    v2_through_the_onion(&relay, &homes, (&via_onion, &proxy), step)?;

    // Everything the relay saw came from loopback: the onion service's tor, or alice.
    let joins: Vec<&String> = relay.stderr.all().iter().filter(|l| l.contains("joined")).collect();
    assert!(joins.iter().all(|l| l.contains("peer=127.0.0.1:")), "{joins:?}");

    onion_flag(&net, &proxy, step)?;
    drop(net);
    assert!(started.elapsed() < TOR_BUDGET, "the Tor test took {:?}", started.elapsed());
    Ok(())
}

/// Alice creates a v2 room on clearnet; bob enters it through the onion address and the SOCKS
/// proxy; each prints what the other says.
fn v2_through_the_onion(
    relay: &Relay,
    homes: &[Home],
    (via_onion, proxy): (&str, &str),
    step: impl Fn() -> Duration,
) -> TestResult {
    let v2 = ["--protocol", "2"];
    let clearnet = relay.invite("onion2");
    let via_onion = via_onion.replace("/onion", "/onion2");
    let mut alice = homes[0].member(&clearnet, "alice", PASSWORD, true, &v2)?;
    alice.stderr.expect("you entered the room's group")?;
    let mut bob =
        homes[1].member(&via_onion, "bob", PASSWORD, false, &["--protocol", "2", "--proxy", proxy])?;
    bob.stderr.expect_within("you entered the room's group", step())?;
    alice.stderr.expect_within("entered the group (epoch 1)", step())?;
    let (a, b) = (random_hex(6), random_hex(6));
    alice.line(&format!("v2 from clearnet {a}"))?;
    bob.stdout.expect_within(&format!("v2 from clearnet {a}"), step())?;
    bob.line(&format!("v2 through tor {b}"))?;
    alice.stdout.expect_within(&format!("v2 through tor {b}"), step())?;
    for client in [&mut bob, &mut alice] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    Ok(())
}

#[test]
fn the_socks_proxy_carries_the_connection() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    // microsocks connects out from 127.0.0.2, so the relay sees that source address only if
    // the proxy carried the connection.
    let proxy = Microsocks::start_with(&["-b", "127.0.0.2"])?;
    let home = Home::new()?;
    let proxy_url = format!("socks5h://127.0.0.1:{}", proxy.port);
    let mut alice =
        home.member(&relay.invite("proxied"), "alice", PASSWORD, true, &["--proxy", &proxy_url])?;
    alice.stderr.expect(&format!("via {proxy_url}"))?;
    alice.stderr.expect("now live")?;
    let joined = relay.stderr.expect("joined")?;
    assert!(joined.contains("peer=127.0.0.2:"), "the relay saw the proxy's address: {joined}");
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    Ok(())
}

/// `--onion`: a second relay publishes itself through the network's client tor (its control
/// port, cookie authentication), prints the `.onion` invite prefix, and a member reaches it by
/// that address through Tor; restarted, it prints the same address from the key it kept.
fn onion_flag(net: &TorNet, proxy: &str, step: impl Fn() -> Duration) -> TestResult {
    let dir = tempfile::tempdir()?;
    let control = format!("127.0.0.1:{}", net.get("CONTROL_PORT")?);
    let cookie = net.dir.path().join("net/nodes/client/control_auth_cookie");
    let cookie = cookie.to_str().ok_or("path")?;
    let flags = ["--onion", "--tor-control", &control, "--tor-cookie-file", cookie, "--onion-port", "7879"];
    let start = || {
        Relay::start_with(
            dir.path(),
            "127.0.0.1:0",
            &[&flags[..], &["--max-unauthenticated-per-ip", "1024"]].concat(),
        )
    };
    let relay = start()?;
    let printed = relay.stdout.all().to_vec();
    let address = printed
        .iter()
        .find_map(|l| l.strip_prefix("onion address "))
        .ok_or_else(|| format!("no onion address line: {printed:?}"))?
        .to_owned();
    let (host, port) = address.rsplit_once(':').ok_or("no port")?;
    assert!(host.ends_with(".onion") && host.len() == 62 && port == "7879", "{address}");
    let prefix = format!("invite prefix chatroom://{}@{address}/ (append the room name)", relay.fingerprint);
    assert!(printed.contains(&prefix), "{printed:?}");
    assert!(printed.iter().any(|l| l.starts_with("created a new onion service key")), "{printed:?}");
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("onion.key");
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);

    let mut relay = relay;
    relay.stdout.expect_within("onion service published", step())?;
    let home = Home::new()?;
    let invite = format!("chatroom://{}@{address}/flag", relay.fingerprint);
    let mut dave = home.member(&invite, "dave", PASSWORD, true, &["--proxy", proxy])?;
    dave.stderr.expect_within("now live", step())?;
    dave.close_stdin();
    assert!(dave.wait()?.success(), "{:?}", dave.stderr.all());
    relay.stderr.expect("nick=dave")?; // the member reached this relay
    drop(relay);

    let again = start()?;
    let printed = again.stdout.all();
    assert!(printed.contains(&format!("onion address {address}")), "the address is stable: {printed:?}");
    assert!(!printed.iter().any(|l| l.starts_with("created a new onion service key")), "{printed:?}");
    Ok(())
}
