//! Invite URLs: `chatroom://FINGERPRINT@HOST:PORT[,HOST2:PORT2...]/ROOM[?kdf=m65536t3p1][&v=2]`.
//!
//! `v` is the room's protocol version (1 or 2). Invites written before it existed, and those
//! built from a relay's invite prefix, lack it: `version: None`, which names no version.
//!
//! The fingerprint is the relay's 64-hex-digit static key, so an invite pins the relay. Several
//! addresses (at most `MAX_RELAY_ADDRS`, none twice) are the nodes of one relay cluster, all
//! holding that one key. An
//! invite never carries the room password. Parsing is strict: anything beyond this grammar
//! (user names, passwords, percent escapes, fragments, other query keys) is refused.

use std::fmt;
use std::str::FromStr;

use chatroom_crypto::{KdfParams, RoomName};

use crate::display::neutralize_short;
use crate::error::AddressError;
use crate::transport::RelayAddrs;

/// The URL scheme.
pub const SCHEME: &str = "chatroom://";
/// Longest invite accepted.
pub const MAX_INVITE_LEN: usize = 512;

/// A parsed invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The relay's static public key.
    pub fingerprint: [u8; 32],
    /// The relay's addresses (one, or the nodes of a relay cluster).
    pub relay: RelayAddrs,
    /// The room.
    pub room: RoomName,
    /// The room's key-derivation parameters (validated).
    pub kdf: KdfParams,
    /// The room's protocol version (1 or 2); `None` for an invite that does not say (one
    /// written before invites carried it, or built from a relay's invite prefix).
    pub version: Option<u8>,
}

/// Parses a 64-hex-digit fingerprint (either case).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], AddressError> {
    let mut key = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s, &mut key).is_err() {
        return Err(AddressError {
            input: neutralize_short(s),
            why: "a relay fingerprint is 64 hexadecimal digits (the relay prints it at start)",
        });
    }
    Ok(key)
}

/// Whether `s` looks like an invite rather than a saved name.
pub fn looks_like_invite(s: &str) -> bool {
    s.starts_with(SCHEME)
}

impl FromStr for Invite {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let bad = |why: &'static str| AddressError { input: neutralize_short(s), why };
        if s.len() > MAX_INVITE_LEN {
            return Err(bad("the invite is too long"));
        }
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| bad("an invite starts with chatroom://"))?;
        if rest.bytes().any(|b| !b.is_ascii_graphic()) || rest.contains(['%', '#', '\\']) {
            return Err(bad("an invite holds only plain ASCII without %, # or spaces"));
        }
        let (fingerprint, rest) =
            rest.split_once('@').ok_or_else(|| bad("expected chatroom://FINGERPRINT@HOST:PORT/ROOM"))?;
        let fingerprint = parse_fingerprint(fingerprint)?;
        let (authority, rest) =
            rest.split_once('/').ok_or_else(|| bad("the room name is missing after /"))?;
        let relay: RelayAddrs = authority.parse()?;
        let (room, query) = match rest.split_once('?') {
            Some((room, query)) => (room, Some(query)),
            None => (rest, None),
        };
        let room = RoomName::new(room)
            .map_err(|_| bad("the room name uses characters outside A-Z a-z 0-9 . _ -"))?;
        let (kdf, version) = match query {
            None => (KdfParams::DEFAULT, None),
            Some(q) => parse_query(q).map_err(bad)?,
        };
        Ok(Invite { fingerprint, relay, room, kdf, version })
    }
}

/// The query: `kdf=...` and `v=1|2`, each at most once, in either order.
fn parse_query(query: &str) -> Result<(KdfParams, Option<u8>), &'static str> {
    let (mut kdf, mut version) = (None, None);
    for param in query.split('&') {
        if let Some(value) = param.strip_prefix("kdf=") {
            let parsed = value.parse().map_err(|_| {
                "kdf= must be Argon2id parameters like m65536t3p1, at least m65536t3p1 and at most m1048576t16p8"
            })?;
            if kdf.replace(parsed).is_some() {
                return Err("kdf= is given twice");
            }
        } else if let Some(value) = param.strip_prefix("v=") {
            let parsed = match value {
                "1" => 1,
                "2" => 2,
                _ => return Err("v= is the room's protocol version, 1 or 2"),
            };
            if version.replace(parsed).is_some() {
                return Err("v= is given twice");
            }
        } else {
            return Err("the only query parameters are kdf=... and v=...");
        }
    }
    Ok((kdf.unwrap_or(KdfParams::DEFAULT), version))
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parameters are always written, default or not: a member who joins with other
        // parameters than the room's derives another key and is told "wrong room password".
        write!(f, "{SCHEME}{}@{}/{}?kdf={}", hex::encode(self.fingerprint), self.relay, self.room, self.kdf)?;
        match self.version {
            Some(v) => write!(f, "&v={v}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn good_invites_round_trip() {
        let s = format!("chatroom://{FP}@relay.example.org:7777/general");
        let inv: Invite = s.parse().unwrap();
        assert_eq!(inv.relay.to_string(), "relay.example.org:7777");
        assert_eq!(inv.room.as_str(), "general");
        assert_eq!(inv.kdf, KdfParams::DEFAULT);
        assert_eq!(inv.to_string(), format!("{s}?kdf=m65536t3p1"), "the parameters are always written");
        let s = format!("chatroom://{FP}@[::1]:7777/team.ops?kdf=m131072t4p1");
        let inv: Invite = s.parse().unwrap();
        assert_eq!(inv.kdf, KdfParams { m_kib: 131_072, t: 4, p: 1 });
        assert_eq!(inv.to_string(), s);
        let upper = format!("chatroom://{}@127.0.0.1:1/r", FP.to_uppercase());
        assert_eq!(upper.parse::<Invite>().unwrap().fingerprint[1], 0x11);
    }

    #[test]
    fn invites_carry_the_protocol_version_and_old_ones_say_none() {
        let old = format!("chatroom://{FP}@h:1/general?kdf=m65536t3p1");
        let inv: Invite = old.parse().unwrap();
        assert_eq!(inv.version, None, "an invite written before the field names no version");
        assert_eq!(inv.to_string(), old, "and is written back without one");
        for v in [1, 2] {
            let s = format!("chatroom://{FP}@h:1/general?kdf=m131072t4p1&v={v}");
            let inv: Invite = s.parse().unwrap();
            assert_eq!((inv.version, inv.kdf.m_kib), (Some(v), 131_072));
            assert_eq!(inv.to_string(), s);
        }
        let inv: Invite = format!("chatroom://{FP}@h:1/general?v=2&kdf=m131072t4p1").parse().unwrap();
        assert_eq!((inv.version, inv.kdf.m_kib), (Some(2), 131_072), "either order");
        let inv: Invite = format!("chatroom://{FP}@h:1/general?v=1").parse().unwrap();
        assert_eq!((inv.version, inv.kdf), (Some(1), KdfParams::DEFAULT));
    }

    #[test]
    fn invites_list_the_nodes_of_a_cluster() {
        let s = format!("chatroom://{FP}@n1.example:7777,[::1]:7778,10.0.0.3:7779/general?kdf=m65536t3p1");
        let inv: Invite = s.parse().unwrap();
        let addrs: Vec<String> = inv.relay.as_slice().iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["n1.example:7777", "[::1]:7778", "10.0.0.3:7779"]);
        assert_eq!(inv.to_string(), s, "the list round-trips in its order");
        let eight = (1..=8).map(|p| format!("h:{p}")).collect::<Vec<_>>().join(",");
        let inv: Invite = format!("chatroom://{FP}@{eight}/r").parse().unwrap();
        assert_eq!(inv.relay.len(), 8);
        assert_eq!(inv.to_string().parse::<Invite>().unwrap(), inv);
        let refused = [
            (format!("chatroom://{FP}@{eight},h:9/r"), "at most 8"),
            (format!("chatroom://{FP}@h:1,H:1/r"), "twice"),
            (format!("chatroom://{FP}@h:1,/r"), "between commas"),
            (format!("chatroom://{FP}@h:1,h/r"), "HOST:PORT"),
            (format!("chatroom://{FP}@h:1,{}:2/r", "a".repeat(300)), "too long"),
        ];
        for (case, why) in refused {
            let err = case.parse::<Invite>().unwrap_err();
            assert!(err.why.contains(why), "{case}: {err}");
        }
        // Eight long names fit the list but not the invite's limit.
        let long = (1..=8).map(|p| format!("{}.example:{p}", "n".repeat(60))).collect::<Vec<_>>().join(",");
        let err = format!("chatroom://{FP}@{long}/r").parse::<Invite>().unwrap_err();
        assert!(err.why.contains("too long"), "{err}");
    }

    #[test]
    fn hostile_invites_are_refused() {
        let cases = [
            String::new(),
            "chatroom://".into(),
            format!("http://{FP}@h:1/r"),
            format!("chatroom://{}@h:1/r", &FP[..63]),
            format!("chatroom://{FP}0@h:1/r"),
            format!("chatroom://zz{}@h:1/r", &FP[2..]),
            format!("chatroom://{FP}@h:1"),
            format!("chatroom://{FP}@h:1/"),
            format!("chatroom://{FP}@h/r"),
            format!("chatroom://{FP}@h:99999/r"),
            format!("chatroom://user:pass@{FP}@h:1/r"),
            format!("chatroom://{FP}@h:1/r/extra"),
            format!("chatroom://{FP}@h:1/r%20x"),
            format!("chatroom://{FP}@h:1/r#frag"),
            format!("chatroom://{FP}@h:1/r?kdf=m1024t1p1"),
            format!("chatroom://{FP}@h:1/r?kdf=m99999999t99p99"),
            format!("chatroom://{FP}@h:1/r?password=x"),
            format!("chatroom://{FP}@h:1/r?kdf=m65536t3p1&x=1"),
            format!("chatroom://{FP}@h:1/r?v=3"),
            format!("chatroom://{FP}@h:1/r?v=02"),
            format!("chatroom://{FP}@h:1/r?v="),
            format!("chatroom://{FP}@h:1/r?v=2&v=2"),
            format!("chatroom://{FP}@h:1/r?kdf=m65536t3p1&kdf=m65536t3p1"),
            format!("chatroom://{FP}@h:1/r?kdf=m65536t3p1&"),
            format!("chatroom://{FP}@h:1/r?&v=2"),
            format!("chatroom://{FP}@h\u{1b}[2J:1/r"),
            format!("chatroom://{FP}@h:1/r\n-!- forged"),
            format!("chatroom://{FP}@h:1/{}", "a".repeat(600)),
        ];
        for case in cases {
            let err = case.parse::<Invite>();
            assert!(err.is_err(), "{case:?} should be refused");
            let msg = err.unwrap_err().to_string();
            assert!(!msg.contains('\u{1b}') && !msg.contains('\n'), "{msg}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in "chatroom://\\PC{0,120}") {
            let _ = s.parse::<Invite>();
        }
    }
}
