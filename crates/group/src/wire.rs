//! The clear header of an MLSMessage (RFC 9420 section 6): its content type, which mls-rs does
//! not expose. A PrivateMessage carries `content_type` in clear and binds it as associated data,
//! so the envelope's kind byte can be checked against it before anything is decrypted. The
//! epoch, also in clear, lets a copy of the relay's log be read for which epoch each commit was
//! built on (two commits of one epoch: the second lost).

use crate::room::Kind;

const PUBLIC_MESSAGE: u16 = 1;
const PRIVATE_MESSAGE: u16 = 2;

/// A bounded reader over the message (rustls `Reader` style: take with `split_at_checked`).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// An RFC 9420 section 2.1.2 variable-length vector: skips its bytes.
    fn skip_vector(&mut self) -> Option<()> {
        let first = self.u8()?;
        let len = match first >> 6 {
            0 => usize::from(first & 0x3f),
            1 => usize::from(first & 0x3f) << 8 | usize::from(self.u8()?),
            2 => {
                let rest = self.take(3)?;
                usize::from(first & 0x3f) << 24
                    | usize::from(rest[0]) << 16
                    | usize::from(rest[1]) << 8
                    | usize::from(rest[2])
            }
            _ => return None,
        };
        self.take(len).map(|_| ())
    }
}

/// The epoch a Public- or PrivateMessage was built in, from its clear header, or `None` for
/// anything else (as `content_kind`). Unauthenticated: a claim of the sender, checked by MLS
/// when the message is processed.
pub fn message_epoch(mls: &[u8]) -> Option<u64> {
    let mut r = Reader(mls);
    let _version = r.u16()?;
    let wire_format = r.u16()?;
    if wire_format != PUBLIC_MESSAGE && wire_format != PRIVATE_MESSAGE {
        return None;
    }
    r.skip_vector()?; // group_id
    let epoch = r.take(8)?;
    Some(u64::from_be_bytes(epoch.try_into().ok()?))
}

/// The content type of a Public- or PrivateMessage as a `Kind`, or `None` for anything else
/// (GroupInfo, Welcome, KeyPackage, a truncated message, an unknown type). It reads a prefix
/// only: bytes after the content type never change the answer.
pub fn content_kind(mls: &[u8]) -> Option<Kind> {
    let mut r = Reader(mls);
    let _version = r.u16()?;
    let wire_format = r.u16()?;
    r.skip_vector()?; // group_id
    r.take(8)?; // epoch
    if wire_format == PUBLIC_MESSAGE {
        // sender: member (1) and external (2) carry a u32; new members (3, 4) nothing.
        match r.u8()? {
            1 | 2 => drop(r.take(4)?),
            3 | 4 => {}
            _ => return None,
        }
        r.skip_vector()?; // authenticated_data
    } else if wire_format != PRIVATE_MESSAGE {
        return None;
    }
    match r.u8()? {
        1 => Some(Kind::Application),
        2 => Some(Kind::Proposal),
        3 => Some(Kind::Commit),
        _ => None,
    }
}
