//! Colours and styles of the UI. A nickname gets its colour from the identity key that signed
//! it (the nickname's own hash only when no key is known), so the same member has the same
//! colour on every screen and every run, and an impostor's look-alike nickname another one.
//! Red is kept for warnings, so no nickname is red.

use chatroom_session::crypto::PublicIdentity;
use chatroom_session::display::key_colour;
use ratatui::style::{Color, Modifier, Style};

/// The colours nicknames are drawn in.
const NICK_PALETTE: [Color; 12] = [
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
    Color::Indexed(208), // orange
    Color::Indexed(141), // lavender
];

/// FNV-1a, 64 bit: fixed across runs and platforms (unlike the standard library's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The colour of a nickname (case-insensitive, as nicknames are).
pub(crate) fn nick_color(nick: &str) -> Color {
    let hash = fnv1a(nick.to_ascii_lowercase().as_bytes());
    let len = NICK_PALETTE.len() as u64;
    NICK_PALETTE[(hash % len) as usize]
}

/// The colour of an identity key: a look-alike nickname under another key most likely gets
/// another colour, which a nickname's own hash could not give.
pub(crate) fn key_color(identity: &PublicIdentity) -> Color {
    NICK_PALETTE[key_colour(identity, NICK_PALETTE.len())]
}

/// Style of a nickname signed by `identity`.
pub(crate) fn key_style(identity: &PublicIdentity) -> Style {
    Style::default().fg(key_color(identity))
}

/// Style of a nickname whose key is not known.
pub(crate) fn nick_style(nick: &str) -> Style {
    Style::default().fg(nick_color(nick))
}

/// Timestamps.
pub(crate) const TIME: Style = Style::new().fg(Color::DarkGray);
/// Informational notices (join, key derivation, help).
pub(crate) const NOTICE: Style = Style::new().fg(Color::Cyan);
/// Join, leave, kick and ban notices.
pub(crate) const PRESENCE: Style = Style::new().fg(Color::DarkGray);
/// Errors the user can fix (a refused command, an unknown command).
pub(crate) const ERROR: Style = Style::new().fg(Color::LightRed);
/// Security warnings: a changed identity key, a message that failed verification.
pub(crate) const ALERT: Style = Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD);
/// Messages replayed from history.
pub(crate) const HISTORY: Style = Style::new().add_modifier(Modifier::DIM);
/// A message that names you or a highlight word.
pub(crate) const MENTION: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
/// The unread marker line.
pub(crate) const UNREAD: Style = Style::new().fg(Color::LightRed);
/// The status bar.
pub(crate) const STATUS: Style = Style::new().fg(Color::White).bg(Color::Blue);
/// The connection state in the status bar when not connected.
pub(crate) const STATUS_BAD: Style =
    Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD);
/// Borders and dividers.
pub(crate) const FRAME: Style = Style::new().fg(Color::DarkGray);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_nick_same_colour_never_red() {
        assert_eq!(nick_color("alice"), nick_color("ALICE"));
        assert_eq!(nick_color("bob"), nick_color("bob"));
        // Fixed values: a change of hash would recolour everyone.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let c = nick_color(&format!("user{i}"));
            assert!(!matches!(c, Color::Red | Color::LightRed));
            seen.insert(format!("{c:?}"));
        }
        assert_eq!(seen.len(), NICK_PALETTE.len(), "the hash spreads over the whole palette");
    }
}
