//! Drawing the state: warning banner (when raised), conversation and member list, status bar,
//! input line. Entries become rows in `rows.rs`; the rest is counted by display width the same
//! way, so wide characters never push the layout out of shape.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::app::{App, Conn};
use super::colors;
use super::editor::MAX_INPUT;
use super::rows::{entry_rows, fit, grapheme_width, wrap_text, TIME_WIDTH};
use chatroom_session::display::neutralize;

/// Width of the member list, when the terminal is wide enough to have one.
const MEMBERS_WIDTH: u16 = 18;
/// Narrower terminals get no member list.
const MEMBERS_MIN_TOTAL: u16 = 50;
/// Rows of the warning banner, at most.
const BANNER_ROWS: usize = 3;
/// The unread marker line, drawn above the first message that arrived while unfocused.
fn unread_row(width: usize) -> Line<'static> {
    let text = "---- unread ";
    let fill = width.saturating_sub(TIME_WIDTH + text.len());
    Line::from(vec![
        Span::raw(" ".repeat(TIME_WIDTH)),
        Span::styled(format!("{text}{}", "-".repeat(fill)), colors::UNREAD),
    ])
}

fn short_hex(fingerprint: &str) -> String {
    let hex: Vec<char> = fingerprint.chars().take(16).collect();
    hex.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
}

/// Frames of the key-derivation progress (no `|`, which separates the status bar's parts).
const SPINNER: [&str; 4] = [".  ", ".. ", "...", "   "];

fn conn_text(conn: &Conn) -> (String, bool) {
    match conn {
        Conn::Connecting { attempt: 0 } => ("connecting".into(), false),
        Conn::Connecting { attempt } => (format!("reconnecting (attempt {attempt})"), false),
        Conn::Deriving { elapsed, .. } => {
            let frame = SPINNER[(elapsed.as_millis() / 100) as usize % SPINNER.len()];
            (format!("deriving room key{frame} {:.1} s", elapsed.as_secs_f64()), false)
        }
        Conn::Joining => ("joining".into(), false),
        Conn::CatchingUp => ("catching up".into(), true),
        Conn::Connected => ("connected".into(), true),
        Conn::Reconnecting { since, delay } => {
            let left = delay.saturating_sub(since.elapsed());
            let secs = left.as_millis().div_ceil(1000);
            (format!("reconnecting in {secs} s"), false)
        }
        Conn::Offline => ("offline".into(), false),
        Conn::Leaving => ("leaving".into(), false),
    }
}

/// Widest the topic is shown in the status bar (cut with an ellipsis beyond).
const MAX_TOPIC_WIDTH: usize = 48;

/// Most rows the status bar takes on a narrow terminal.
const STATUS_MAX_ROWS: usize = 3;

/// The status bar: its parts packed into as few rows as the width allows (one on a wide
/// terminal), so the safety code is never cut off.
fn status_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let (state, good) = conn_text(&app.conn);
    let mut parts = vec![
        Span::styled(format!("{} @ {}", app.room, app.relay), colors::STATUS),
        Span::styled(state, if good { colors::STATUS } else { colors::STATUS_BAD }),
    ];
    if !app.windows.is_empty() {
        parts.push(Span::styled(app.windows.clone(), colors::STATUS.add_modifier(Modifier::BOLD)));
    }
    if let Some(topic) = &app.topic {
        parts.push(Span::styled(
            fit(&format!("topic: {topic}"), MAX_TOPIC_WIDTH.min(width.saturating_sub(4))),
            colors::STATUS,
        ));
    }
    if let Some(fp) = &app.relay_fingerprint {
        parts.push(Span::styled(format!("relay {}", short_hex(fp)), colors::STATUS));
    }
    if let Some(code) = &app.safety_code {
        parts.push(Span::styled(format!("safety {code}"), colors::STATUS));
    }
    let mut rows: Vec<Vec<Span<'static>>> = Vec::new();
    let mut used = 0;
    for part in parts {
        let w = part.width();
        let full = rows.len() >= STATUS_MAX_ROWS;
        match rows.last_mut() {
            Some(row) if used + 3 + w <= width || full => {
                row.push(Span::styled(" | ", colors::STATUS));
                row.push(part);
                used += 3 + w;
            }
            _ => {
                rows.push(vec![Span::styled(" ", colors::STATUS), part]);
                used = 1 + w;
            }
        }
    }
    rows.into_iter().map(|r| Line::from(r).style(colors::STATUS)).collect()
}

fn draw_rows(buf: &mut Buffer, area: Rect, rows: &[Line<'_>]) {
    if area.is_empty() {
        return;
    }
    for (i, row) in rows.iter().enumerate().take(usize::from(area.height)) {
        buf.set_line(area.x, area.y + i as u16, row, area.width);
    }
}

fn draw_conversation(app: &mut App, buf: &mut Buffer, area: Rect) {
    let height = usize::from(area.height);
    let width = usize::from(area.width);
    app.page = height;
    app.pane_width = width;
    // Rows from the newest entry back, until the scrolled-to window is covered.
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut exhausted = true;
    let (first, unread_at) = (app.first(), app.unread_at);
    for (i, entry) in app.entries().enumerate().rev() {
        if rows.len() >= app.scroll + height {
            exhausted = false;
            break;
        }
        let mut lines = entry_rows(entry, width);
        lines.reverse();
        rows.extend(lines);
        if unread_at == Some(first + i as u64) {
            rows.push(unread_row(width));
        }
    }
    if exhausted {
        app.scroll = app.scroll.min(rows.len().saturating_sub(height));
        if app.scroll == 0 {
            app.unseen = 0;
        }
    }
    let end = app.scroll.min(rows.len());
    let start = (app.scroll + height).min(rows.len());
    let mut visible: Vec<Line<'static>> = rows[end..start].to_vec();
    visible.reverse();
    draw_rows(buf, area, &visible);
    if app.scroll > 0 && area.height > 1 {
        let more = match app.unseen {
            0 => " -- more below: PageDown -- ".to_owned(),
            n => format!(" -- {n} new below: PageDown -- "),
        };
        let last = Rect { y: area.bottom() - 1, height: 1, ..area };
        buf.set_style(last, colors::STATUS);
        buf.set_line(
            last.x,
            last.y,
            &Line::styled(more, colors::STATUS.add_modifier(Modifier::BOLD)),
            last.width,
        );
    }
}

fn draw_members(app: &App, buf: &mut Buffer, area: Rect) {
    for y in area.top()..area.bottom() {
        buf.set_string(area.x, y, "|", colors::FRAME);
    }
    let inner = Rect { x: area.x + 2, width: area.width.saturating_sub(2), ..area };
    let count = match app.members.len() {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    };
    let mut rows = vec![Line::styled(count, colors::FRAME)];
    // One column for the owner mark.
    let nick_width = usize::from(inner.width).saturating_sub(1);
    for m in &app.members {
        let full = neutralize(m.nick.as_str());
        let mut style = colors::key_style(&m.identity);
        let nick = fit(&full, nick_width);
        if m.me {
            style = style.add_modifier(Modifier::BOLD);
        }
        let mark = if m.owner { "@" } else { " " };
        rows.push(Line::from(vec![Span::styled(mark, colors::FRAME), Span::styled(nick, style)]));
    }
    if rows.len() > usize::from(area.height) && area.height > 0 {
        let hidden = rows.len() - usize::from(area.height) + 1;
        rows.truncate(usize::from(area.height) - 1);
        rows.push(Line::styled(format!("(+{hidden} more)"), colors::FRAME));
    }
    draw_rows(buf, inner, &rows);
}

/// The input line's length counter, once the line is three quarters of a message: e.g.
/// ` 3100/4096`, in red when a key was just refused.
fn input_counter(app: &App) -> Option<Span<'static>> {
    let len = app.editor.body_len();
    if len * 4 < MAX_INPUT * 3 && !app.editor.full() {
        return None;
    }
    let style = if app.editor.full() { colors::ERROR } else { colors::FRAME };
    Some(Span::styled(format!(" {len}/{MAX_INPUT}"), style))
}

/// The end of `before` that fits in `avail` columns: the cursor stays visible however long
/// the line is, at a cost in the shown width only.
fn visible_tail(before: &str, avail: usize) -> &str {
    let mut width = 0;
    let mut start = before.len();
    for (i, g) in before.grapheme_indices(true).rev() {
        width += grapheme_width(g);
        if width > avail {
            break;
        }
        start = i;
    }
    &before[start..]
}

fn draw_input(app: &App, frame: &mut Frame<'_>, area: Rect) {
    if area.is_empty() {
        return;
    }
    if let Some(lines) = &app.paste {
        let text = format!("[paste: {} lines] Enter sends them, Esc cancels", lines.len());
        let line = Line::styled(text, Style::default().add_modifier(Modifier::BOLD));
        frame.buffer_mut().set_line(area.x, area.y, &line, area.width);
        return;
    }
    let prompt = format!("[{}] ", app.nick);
    let prompt_width = prompt.width();
    let counter = input_counter(app);
    let counter_width = counter.as_ref().map_or(0, Span::width);
    let text = app.editor.text();
    let before = neutralize(&text[..app.editor.cursor()]);
    let after = neutralize(&text[app.editor.cursor()..]);
    let avail = usize::from(area.width).saturating_sub(prompt_width + counter_width + 1).max(1);
    // Scroll the line horizontally so the cursor stays visible.
    let shown_before = visible_tail(&before, avail);
    let cursor_col = shown_before.width();
    let shown_after = visible_tail_start(&after, avail.saturating_sub(cursor_col) + 1);
    let line = Line::from(vec![
        Span::styled(prompt, Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(shown_before.to_owned()),
        Span::raw(shown_after.to_owned()),
    ]);
    let text_width = u16::try_from(usize::from(area.width).saturating_sub(counter_width)).unwrap_or(0);
    frame.buffer_mut().set_line(area.x, area.y, &line, text_width);
    if let Some(counter) = counter {
        let x = area.x + text_width;
        frame.buffer_mut().set_span(x, area.y, &counter, area.width.saturating_sub(text_width));
    }
    let x = area.x.saturating_add(u16::try_from(prompt_width + cursor_col).unwrap_or(u16::MAX));
    frame.set_cursor_position(Position { x: x.min(area.right().saturating_sub(1)), y: area.y });
}

/// The start of `after` that fits in `avail` columns (what follows the cursor).
fn visible_tail_start(after: &str, avail: usize) -> &str {
    let mut width = 0;
    for (i, g) in after.grapheme_indices(true) {
        width += grapheme_width(g);
        if width > avail {
            return &after[..i];
        }
    }
    after
}

/// Draws the whole screen.
pub(crate) fn render(frame: &mut Frame<'_>, app: &mut App) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let banner: Vec<Line<'static>> = match &app.alert {
        Some((text, count)) => {
            let more = if *count > 1 { format!(" ({} warnings)", count) } else { String::new() };
            let text = format!("!!! WARNING: {text}{more} -- Esc dismisses");
            wrap_text(&text, usize::from(area.width), usize::from(area.width))
                .into_iter()
                .take(BANNER_ROWS)
                .map(|r| Line::styled(r, colors::ALERT))
                .collect()
        }
        None => Vec::new(),
    };
    let banner_rows = u16::try_from(banner.len()).unwrap_or(0).min(area.height.saturating_sub(4));
    let status_rows = status_lines(app, usize::from(area.width));
    let status_height =
        u16::try_from(status_rows.len()).unwrap_or(1).min(area.height.saturating_sub(2)).max(1);
    let [top, middle, status, input] = Layout::vertical([
        Constraint::Length(banner_rows),
        Constraint::Min(0),
        Constraint::Length(status_height),
        Constraint::Length(1),
    ])
    .areas(area);
    let buf = frame.buffer_mut();
    if top.height > 0 {
        buf.set_style(top, colors::ALERT);
        draw_rows(buf, top, &banner);
    }
    let (conversation, members) = if area.width >= MEMBERS_MIN_TOTAL {
        let [c, m] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(MEMBERS_WIDTH)]).areas(middle);
        (c, Some(m))
    } else {
        (middle, None)
    };
    draw_conversation(app, buf, conversation);
    if let Some(m) = members {
        draw_members(app, buf, m);
    }
    if !status.is_empty() {
        buf.set_style(status, colors::STATUS);
        draw_rows(buf, status, &status_rows);
    }
    draw_input(app, frame, input);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::app::App;
    use chatroom_session::crypto::{ContentKind, Nick, PublicIdentity};
    use chatroom_session::session::{ChatMessage, ConnState, Event, MemberInfo, Rejected};
    use ratatui::backend::TestBackend;
    use ratatui::style::Color;
    use ratatui::Terminal;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn app() -> App {
        App::with_clock("127.0.0.1:7777", "lobby", "alice", |_| "12:00".into(), || 0)
    }

    fn message(nick: &str, body: &str) -> Event {
        Event::Message(ChatMessage {
            seq: 1,
            history: false,
            sender: PublicIdentity([9; 32]),
            nick: Nick::new(nick).unwrap(),
            from_me: false,
            kind: ContentKind::Text,
            body: body.into(),
            timestamp_ms: 0,
        })
    }

    fn draw(
        app: &mut App,
        width: u16,
        height: u16,
    ) -> Result<Terminal<TestBackend>, Box<dyn std::error::Error>> {
        let mut terminal = Terminal::new(TestBackend::new(width, height))?;
        terminal.draw(|f| render(f, app))?;
        Ok(terminal)
    }

    /// The screen as text, one string per row, trailing spaces removed; the second cell of a
    /// wide character is skipped, as a terminal shows it.
    fn screen(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buf = terminal.backend().buffer();
        let mut out = Vec::new();
        for y in 0..buf.area.height {
            let mut row = String::new();
            let mut skip = 0;
            for x in 0..buf.area.width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let symbol = buf[(x, y)].symbol();
                skip = symbol.width().saturating_sub(1);
                row.push_str(symbol);
            }
            out.push(row.trim_end().to_owned());
        }
        out
    }

    fn joined(app: &mut App) {
        app.on_event(Event::Joined {
            created: false,
            owner: PublicIdentity([1; 32]),
            owner_is_me: true,
            safety_code: "04821 99310 12345 67890 11111".into(),
            relay_fingerprint: "ab12cd34ef567890".repeat(4),
            rejoin: true,
            addr: "127.0.0.1:7777".into(),
        });
        app.on_event(Event::HistoryEnd);
        app.on_event(Event::State(ConnState::Live));
        let mut me = MemberInfo {
            nick: Nick::new("alice").unwrap(),
            identity: PublicIdentity([1; 32]),
            owner: true,
            me: true,
        };
        let bob = MemberInfo {
            nick: Nick::new("bob").unwrap(),
            identity: PublicIdentity([2; 32]),
            owner: false,
            me: false,
        };
        me.owner = true;
        app.on_event(Event::Members(vec![bob, me]));
    }

    #[test]
    fn full_screen_snapshot() -> TestResult {
        let mut app = app();
        joined(&mut app);
        app.on_event(message("bob", "hi alice"));
        app.on_event(Event::Message(ChatMessage {
            kind: ContentKind::Action,
            ..match message("bob", "waves") {
                Event::Message(m) => m,
                _ => unreachable!(),
            }
        }));
        for c in "hello".chars() {
            app.editor.insert(c);
        }
        let terminal = draw(&mut app, 72, 8)?;
        assert_eq!(
            screen(&terminal),
            [
                "12:00 -!- reconnected; nothing was missed             | 2 members",
                "12:00 <bob> hi alice                                  | @alice",
                "12:00 * bob waves                                     |  bob",
                "                                                      |",
                "                                                      |",
                " lobby @ 127.0.0.1:7777 | connected | relay ab12 cd34 ef56 7890",
                " safety 04821 99310 12345 67890 11111",
                "[alice] hello",
            ]
        );
        let buf = terminal.backend().buffer();
        // The colour comes from the signing key, not the nickname: the member list's bob (key
        // [2; 32]) and the messages' bob (key [9; 32]) differ, as an impostor would.
        let (signer, listed) = (PublicIdentity([9; 32]), PublicIdentity([2; 32]));
        assert_eq!(buf[(7, 1)].fg, colors::key_color(&signer), "nicknames in their signer's colour");
        assert_eq!(buf[(57, 2)].fg, colors::key_color(&listed), "members in their key's colour");
        assert_ne!(colors::key_color(&signer), colors::key_color(&listed));
        assert_eq!(
            (buf[(0, 5)].bg, buf[(71, 6)].bg),
            (Color::Blue, Color::Blue),
            "status bar, two rows when narrow"
        );
        Ok(())
    }

    #[test]
    fn status_bar_shows_the_safety_code_and_reconnecting_countdown() -> TestResult {
        let mut app = app();
        joined(&mut app);
        let terminal = draw(&mut app, 120, 4)?;
        assert_eq!(
            screen(&terminal)[2],
            " lobby @ 127.0.0.1:7777 | connected | relay ab12 cd34 ef56 7890 | safety 04821 99310 12345 67890 11111"
        );
        app.on_event(Event::State(ConnState::Reconnecting {
            delay: std::time::Duration::from_millis(4500),
            reason: "relay closed\u{1b}[2J".into(),
        }));
        let terminal = draw(&mut app, 120, 4)?;
        let rows = screen(&terminal);
        assert!(rows[2].contains("| reconnecting in 5 s |"), "{rows:?}");
        assert!(
            rows.iter().any(|r| r.contains("connection lost: relay closed^[[2J. Reconnecting")),
            "{rows:?}"
        );
        assert_eq!(terminal.backend().buffer()[(30, 2)].bg, Color::Red, "not connected: red");
        Ok(())
    }

    #[test]
    fn key_derivation_progress_is_shown() -> TestResult {
        use chatroom_session::crypto::KdfParams;
        use chatroom_session::session::KdfProgress;
        let mut app = app();
        app.on_event(Event::KeyDerivation(KdfProgress::Started(KdfParams::DEFAULT)));
        app.on_event(Event::KeyDerivation(KdfProgress::Running(std::time::Duration::from_millis(1234))));
        let terminal = draw(&mut app, 100, 4)?;
        let rows = screen(&terminal);
        assert!(
            rows[0].starts_with("12:00 -!- deriving the room key (Argon2id m65536t3p1)...  "),
            "{rows:#?}"
        );
        assert_eq!(rows[2], " lobby @ 127.0.0.1:7777 | deriving room key.   1.2 s");
        assert!(app.animating(), "redrawn while it runs");
        app.on_event(Event::KeyDerivation(KdfProgress::Done(std::time::Duration::from_millis(1300))));
        let terminal = draw(&mut app, 100, 4)?;
        let rows = screen(&terminal);
        assert!(rows[1].starts_with("12:00 -!- room key ready (1.30 s)  "), "{rows:#?}");
        assert_eq!(rows[2], " lobby @ 127.0.0.1:7777 | joining");
        Ok(())
    }

    #[test]
    fn long_lines_wrap_with_a_hanging_indent() -> TestResult {
        let mut app = app();
        app.on_event(message(
            "bob",
            "the quick brown fox jumps over the lazy dog and keeps running far away",
        ));
        let terminal = draw(&mut app, 40, 6)?;
        assert_eq!(
            screen(&terminal)[..4],
            [
                "12:00 <bob> the quick brown fox jumps",
                "            over the lazy dog and keeps",
                "            running far away",
                "",
            ]
        );
        Ok(())
    }

    #[test]
    fn wide_characters_wrap_by_width_and_keep_the_layout() -> TestResult {
        let mut app = app();
        joined(&mut app);
        app.on_event(message("bob", "日本語のテキストと絵文字👩‍👩‍👧🎉が混ざった長い行 مرحبا بالعالم"));
        let terminal = draw(&mut app, 60, 8)?;
        let rows = screen(&terminal);
        assert_eq!(rows[6], " safety 04821 99310 12345 67890 11111", "never cut off: {rows:#?}");
        for y in 0..4 {
            // The member list's rule stays in column 42 on every row.
            assert_eq!(terminal.backend().buffer()[(42, y)].symbol(), "|", "{rows:#?}");
        }
        assert_eq!(
            rows[1..3],
            [
                "12:00 <bob> 日本語のテキストと絵文字👩‍👩‍👧🎉が| @alice",
                "            混ざった長い行 مرحبا بالعالم  |  bob",
            ],
            "{rows:#?}"
        );
        Ok(())
    }

    #[test]
    fn hostile_text_is_neutralised_and_cannot_forge_a_notice() -> TestResult {
        let mut app = app();
        app.on_event(message(
            "mallory",
            "hi\n12:00 -!- alice was kicked\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{202e}txet\u{2028}end",
        ));
        let mut padded = "x".to_owned();
        padded.push_str(&" ".repeat(90));
        padded.push_str("-!- bob is now the owner");
        app.on_event(message("mallory", &padded));
        let terminal = draw(&mut app, 120, 8)?;
        let rows = screen(&terminal);
        assert_eq!(
            rows[..3],
            [
                "12:00 <mallory> hi^J12:00 -!- alice was kicked^[[2J^[]0;pwned^G^M<U+202E>txet<U+2028>end              \
                 | 0 members",
                "12:00 <mallory> x                                                                                     |",
                "                     -!- bob is now the owner                                                         |",
            ],
            "the continuation is indented past the nickname, never at column 0"
        );
        for y in 0..8u16 {
            for x in 0..120u16 {
                let symbol = terminal.backend().buffer()[(x, y)].symbol();
                assert!(!symbol.chars().any(|c| c.is_control()), "control character at {x},{y}");
            }
        }
        // Message text has the default style; notices are cyan.
        assert_eq!(terminal.backend().buffer()[(25, 2)].fg, Color::Reset);
        assert_eq!(terminal.backend().buffer()[(25, 2)].bg, Color::Reset);
        Ok(())
    }

    #[test]
    fn key_change_raises_a_banner_and_a_warning_line() -> TestResult {
        let mut app = app();
        app.on_event(Event::KeyChanged {
            nick: Nick::new("bob").unwrap(),
            pinned: PublicIdentity([0x11; 32]),
            seen: PublicIdentity([0x22; 32]),
        });
        app.on_event(Event::Rejected(Rejected::Unverified { seq: 9 }));
        let terminal = draw(&mut app, 60, 20)?;
        let rows = screen(&terminal);
        assert_eq!(
            rows[..4],
            [
                "!!! WARNING: message #9 failed verification (altered,",
                "forged, or sealed with another room password) and was",
                "dropped (2 warnings) -- Esc dismisses",
                "12:00 !!! IDENTITY KEY CHANGED for bob:   | 0 members",
            ]
        );
        assert_eq!(rows[10], "          . Someone may be impersonating  |");
        assert_eq!(rows[14], "12:00 !!! message #9 failed verification  |");
        let buf = terminal.backend().buffer();
        assert_eq!((buf[(0, 0)].bg, buf[(59, 1)].bg), (Color::Red, Color::Red), "the banner is red across");
        assert_eq!(buf[(10, 3)].bg, Color::Red);
        Ok(())
    }

    #[test]
    fn history_is_marked_and_scrolling_pages_back() -> TestResult {
        let mut app = app();
        for i in 0..20 {
            app.on_event(Event::Message(ChatMessage {
                seq: i + 1,
                history: true,
                sender: PublicIdentity([9; 32]),
                nick: Nick::new("bob").unwrap(),
                from_me: false,
                kind: ContentKind::Text,
                body: format!("old {i}"),
                timestamp_ms: 0,
            }));
        }
        app.on_event(Event::HistoryEnd);
        app.on_event(message("bob", "new"));
        let terminal = draw(&mut app, 40, 6)?;
        let rows = screen(&terminal);
        assert_eq!(
            rows[..4],
            [
                "12:00 <bob> old 18",
                "12:00 <bob> old 19",
                "12:00 ---- end of history; now live ----",
                "12:00 <bob> new"
            ]
        );
        assert!(terminal.backend().buffer()[(12, 0)].modifier.contains(Modifier::DIM));
        assert!(!terminal.backend().buffer()[(12, 3)].modifier.contains(Modifier::DIM));
        app.on_key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::PageUp,
            crossterm::event::KeyModifiers::NONE,
        ));
        let terminal = draw(&mut app, 49, 6)?;
        let rows = screen(&terminal);
        assert_eq!(
            rows[..4],
            ["12:00 <bob> old 15", "12:00 <bob> old 16", "12:00 <bob> old 17", " -- more below: PageDown --"]
        );
        app.on_event(message("bob", "newer"));
        let terminal = draw(&mut app, 49, 6)?;
        let rows = screen(&terminal);
        assert_eq!(
            rows[..4],
            [
                "12:00 <bob> old 15",
                "12:00 <bob> old 16",
                "12:00 <bob> old 17",
                " -- 1 new below: PageDown --"
            ],
            "the view stays put"
        );
        for _ in 0..20 {
            app.scroll_up(10);
        }
        let terminal = draw(&mut app, 40, 6)?;
        assert_eq!(screen(&terminal)[0], "12:00 ---- history ---------------------", "clamped at the top");
        Ok(())
    }

    #[test]
    fn input_line_scrolls_to_keep_the_cursor_visible() -> TestResult {
        let mut app = app();
        for c in "0123456789abcdefghijklmnopqrstuvwxyz".chars() {
            app.editor.insert(c);
        }
        let mut terminal = draw(&mut app, 30, 4)?;
        assert_eq!(screen(&terminal)[3], "[alice] fghijklmnopqrstuvwxyz");
        terminal.backend_mut().assert_cursor_position((29, 3));
        app.editor.home();
        let mut terminal = draw(&mut app, 30, 4)?;
        assert_eq!(screen(&terminal)[3], "[alice] 0123456789abcdefghijkl");
        terminal.backend_mut().assert_cursor_position((8, 3));
        Ok(())
    }

    #[test]
    fn a_long_line_shows_a_counter_and_a_refused_key_turns_it_red() -> TestResult {
        let mut app = app();
        app.editor.insert_str(&"x".repeat(MAX_INPUT * 3 / 4 - 1));
        assert!(!screen(&draw(&mut app, 40, 4)?)[3].contains('/'), "no counter on a short line");
        app.editor.insert('y');
        let terminal = draw(&mut app, 40, 4)?;
        let row = &screen(&terminal)[3];
        assert!(
            row.contains("xy ") && row.ends_with(&format!(" {}/{MAX_INPUT}", MAX_INPUT * 3 / 4)),
            "{row}"
        );
        app.editor.insert_str(&"z".repeat(MAX_INPUT));
        let terminal = draw(&mut app, 40, 4)?;
        let row = &screen(&terminal)[3];
        assert!(row.contains("zz ") && row.ends_with(&format!(" {MAX_INPUT}/{MAX_INPUT}")), "{row}");
        assert_eq!(terminal.backend().buffer()[(39, 3)].fg, Color::LightRed, "full: red");
        Ok(())
    }

    #[test]
    fn a_multi_line_paste_waits_for_enter() -> TestResult {
        let mut app = app();
        app.on_paste("one\r\ntwo\n\nthree\n");
        let terminal = draw(&mut app, 60, 4)?;
        let rows = screen(&terminal);
        assert_eq!(rows[3], "[paste: 3 lines] Enter sends them, Esc cancels", "{rows:#?}");
        assert!(rows[0].contains("pasted 3 lines: Enter sends"), "{rows:#?}");
        Ok(())
    }

    #[test]
    fn mentions_are_highlighted_and_the_unread_marker_goes_above_the_first_unseen() -> TestResult {
        let mut app = app();
        app.set_alerts(&["Deploy".into()], crate::config::Bell::Unfocused);
        joined(&mut app);
        app.on_event(message("bob", "seen before"));
        app.focus(false);
        app.on_event(message("bob", "hey alice, look"));
        assert!(app.take_ring(), "a mention while unfocused rings");
        app.on_event(message("bob", "the deploy is done"));
        assert!(app.take_ring(), "a highlight word is a mention too");
        app.on_event(message("bob", "malice and alice_b are not you"));
        assert!(!app.take_ring(), "a word inside another is no mention");
        app.focus(true);
        app.on_event(message("bob", "alice again"));
        assert!(!app.take_ring(), "focused: no bell by default");
        let terminal = draw(&mut app, 72, 10)?;
        let rows = screen(&terminal);
        assert_eq!(rows[1], "12:00 <bob> seen before                               | @alice", "{rows:#?}");
        assert!(rows[2].starts_with("      ---- unread -----"), "{rows:#?}");
        assert!(rows[3].starts_with("12:00 <bob> hey alice, look"), "{rows:#?}");
        let buf = terminal.backend().buffer();
        assert_eq!(buf[(12, 3)].fg, Color::Yellow, "a mention is highlighted");
        assert_eq!(buf[(12, 4)].fg, Color::Yellow, "so is a highlight word");
        assert_ne!(buf[(12, 5)].fg, Color::Yellow, "not a mention");
        assert_ne!(buf[(12, 1)].fg, Color::Yellow);
        Ok(())
    }

    #[test]
    fn the_owners_topic_is_in_the_status_bar_and_anyone_elses_is_refused() -> TestResult {
        let mut app = app();
        joined(&mut app);
        let topic = |sender: u8, body: &str| {
            Event::Message(ChatMessage {
                sender: PublicIdentity([sender; 32]),
                kind: ContentKind::Topic,
                ..match message("bob", body) {
                    Event::Message(m) => m,
                    _ => unreachable!(),
                }
            })
        };
        // The owner of the room in `joined` is [1; 32].
        app.on_event(topic(1, "release on friday\u{1b}[2J"));
        app.on_event(topic(2, "free pizza"));
        let terminal = draw(&mut app, 120, 8)?;
        let rows = screen(&terminal);
        assert!(rows[5].contains("| connected | topic: release on friday^[[2J | relay"), "{rows:#?}");
        assert!(rows.iter().any(|r| r.contains("bob set the topic: release on friday^[[2J")), "{rows:#?}");
        assert!(
            rows.iter().any(|r| r.contains("bob (key 0202 0202 0202 0202), who is not the room owner, tried to set")),
            "{rows:#?}"
        );
        assert!(!rows.iter().any(|r| r.contains("topic: free pizza")), "{rows:#?}");
        Ok(())
    }

    #[test]
    fn a_hidden_window_counts_its_activity_for_the_status_bar() -> TestResult {
        let mut app = app();
        joined(&mut app);
        app.set_active(false);
        app.on_event(message("bob", "hello"));
        assert_eq!(app.activity(), (1, false));
        app.on_event(message("bob", "alice, look"));
        assert_eq!(app.activity(), (2, true));
        assert!(app.take_ring(), "a mention in a hidden window rings");
        app.set_active(true);
        assert_eq!(app.activity(), (0, false), "shown: read");
        app.windows = "[1:lobby] 2:ops(3!)".into();
        let rows = screen(&draw(&mut app, 120, 5)?);
        assert!(
            rows[2].starts_with(" lobby @ 127.0.0.1:7777 | connected | [1:lobby] 2:ops(3!) | relay"),
            "{rows:#?}"
        );
        Ok(())
    }

    #[test]
    fn tiny_and_resized_terminals_do_not_panic() -> TestResult {
        let mut app = app();
        joined(&mut app);
        app.on_event(message("bob", "日本語👩‍👩‍👧 text that wraps"));
        for (w, h) in [(1, 1), (2, 3), (5, 2), (13, 4), (49, 10), (50, 10), (200, 60)] {
            draw(&mut app, w, h)?;
        }
        Ok(())
    }

    #[test]
    fn long_nicknames_are_cut_with_an_ellipsis_and_indent_little() -> TestResult {
        let long = "abcdefghijklmnopqrstuvwxyz012345";
        let mut app = app();
        joined(&mut app);
        app.on_event(Event::Members(vec![MemberInfo {
            nick: Nick::new(long).unwrap(),
            identity: PublicIdentity([3; 32]),
            owner: true,
            me: false,
        }]));
        app.on_event(message(long, &"word ".repeat(20)));
        let terminal = draw(&mut app, 80, 8)?;
        let rows = screen(&terminal);
        assert!(rows[1].ends_with("| @abcdefghijklmn…"), "{rows:#?}");
        let body: Vec<&String> = rows.iter().filter(|r| r.contains("word")).collect();
        assert!(body[0].starts_with(&format!("12:00 <{long}> word")), "{rows:#?}");
        assert!(body[1].starts_with("          word"), "indented by 10 columns, not 40: {rows:#?}");
        assert_eq!(fit("日本語", 4), "日…");
        assert_eq!(fit("bob", 3), "bob");
        Ok(())
    }

    #[test]
    fn wrap_text_rules() {
        assert_eq!(wrap_text("", 5, 5), [""]);
        assert_eq!(wrap_text("abcdefgh", 3, 3), ["abc", "def", "gh"]);
        assert_eq!(wrap_text("ab cd ef", 5, 5), ["ab ", "cd ef"]);
        assert_eq!(wrap_text("日本語", 3, 3), ["日", "本", "語"], "a wide character never straddles rows");
        assert_eq!(wrap_text("日", 1, 1), ["日"], "wider than a row: a row of its own");
        assert_eq!(wrap_text("abc", 0, 2), ["", "ab", "c"], "no room on the first row");
        for text in ["a b c d e f", "日本 語のテ キスト", "👩‍👩‍👧👩‍👩‍👧 👩‍👩‍👧"]
        {
            for width in 2..12 {
                let rows = wrap_text(text, width, width);
                assert!(rows.iter().all(|r| r.width() <= width), "{text:?} at {width}: {rows:?}");
                assert_eq!(rows.concat(), text, "nothing lost or added");
            }
        }
    }
}
