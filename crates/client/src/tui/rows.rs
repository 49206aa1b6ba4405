//! An entry's rows: text wrapped by grapheme cluster and display width (CJK and most emoji take
//! two columns), the way the terminal buffer counts them, with continuation rows indented past
//! the nickname, so no text of a member can start a row where the program's own lines start.
//! Shared by drawing (`render.rs`) and scrolling (`app.rs`), which must agree on row counts.

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::colors;
use super::entry::{Body, Delivery, Entry, NoticeKind};

/// Width of `HH:MM `.
pub(crate) const TIME_WIDTH: usize = 6;
/// Widest hanging indent past a nickname; a longer nickname's continuation rows are indented
/// by `LONG_NICK_INDENT` instead (still past the column where notices start).
const MAX_INDENT: usize = 24;
/// Indent of continuation rows after a nickname wider than `MAX_INDENT` allows.
const LONG_NICK_INDENT: usize = TIME_WIDTH + 4;

/// `text` cut to `width` columns, ending in `…` when cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in text.graphemes(true) {
        let w = grapheme_width(g);
        if used + w + 1 > width {
            break;
        }
        out.push_str(g);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// Display width of a grapheme as the terminal buffer counts it.
pub(crate) fn grapheme_width(g: &str) -> usize {
    g.width()
}

/// Splits `text` into rows: the first at most `first` columns wide, the others at most `rest`.
/// Breaks after a space when one is on the row, otherwise between graphemes. A grapheme wider
/// than a whole row gets a row of its own.
pub(crate) fn wrap_text(text: &str, first: usize, rest: usize) -> Vec<String> {
    let rest = rest.max(1);
    let mut rows: Vec<String> = Vec::new();
    let mut row = String::new();
    let mut row_width = 0;
    // Byte offset just after the last space on the row, and the width up to it.
    let mut last_space: Option<(usize, usize)> = None;
    for g in text.graphemes(true) {
        let w = grapheme_width(g);
        if w == 0 {
            continue;
        }
        loop {
            let limit = if rows.is_empty() { first } else { rest };
            if row_width + w <= limit {
                break;
            }
            if row_width == 0 {
                if rows.is_empty() && limit < rest {
                    // Little room after the prefix: start on the next row.
                    rows.push(String::new());
                    continue;
                }
                // Wider than a whole row: alone on its row.
                break;
            }
            match last_space.take() {
                Some((at, width)) if at < row.len() => {
                    let carry = row.split_off(at);
                    rows.push(row);
                    row = carry;
                    row_width -= width;
                }
                _ => {
                    rows.push(std::mem::take(&mut row));
                    row_width = 0;
                }
            }
        }
        row.push_str(g);
        row_width += w;
        if g == " " {
            last_space = Some((row.len(), row_width));
        }
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }
    rows
}

/// The rows of one entry at `width` columns.
pub(crate) fn entry_rows(entry: &Entry, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let time = Span::styled(format!("{:<5} ", entry.time), colors::TIME);
    let (prefix, text_style): (Vec<Span<'static>>, Style) = match &entry.body {
        Body::Message { nick, text: _, action, history, mine, delivery, mention, key } => {
            let mut nick_style = key.as_ref().map_or_else(|| colors::nick_style(nick), colors::key_style);
            if *mine {
                nick_style = nick_style.add_modifier(Modifier::BOLD);
            }
            let mut text_style = Style::default();
            if *history {
                nick_style = nick_style.add_modifier(Modifier::DIM);
                text_style = colors::HISTORY;
            }
            if *delivery == Delivery::Pending {
                text_style = text_style.add_modifier(Modifier::DIM);
            }
            if *mention {
                text_style = text_style.patch(colors::MENTION);
            }
            let prefix = if *action {
                vec![time, Span::styled("* ", nick_style), Span::styled(format!("{nick} "), nick_style)]
            } else {
                vec![
                    time,
                    Span::styled("<", colors::FRAME),
                    Span::styled(nick.clone(), nick_style),
                    Span::styled("> ", colors::FRAME),
                ]
            };
            (prefix, text_style)
        }
        Body::Notice { kind, .. } => {
            let (mark, style) = match kind {
                NoticeKind::Info => ("-!- ", colors::NOTICE),
                NoticeKind::Presence => ("-!- ", colors::PRESENCE),
                NoticeKind::Error => ("-!- ", colors::ERROR),
                NoticeKind::Alert => ("!!! ", colors::ALERT),
            };
            (vec![time, Span::styled(mark, style)], style)
        }
        Body::Divider(label) => {
            let text = format!("---- {label} ");
            let fill = width.saturating_sub(TIME_WIDTH + text.width());
            return vec![Line::from(vec![
                time,
                Span::styled(format!("{text}{}", "-".repeat(fill)), colors::FRAME),
            ])];
        }
    };
    let text = match &entry.body {
        Body::Message { text, delivery: Delivery::Failed, .. } => format!("{text} [not delivered]"),
        Body::Message { text, .. } | Body::Notice { text, .. } => text.clone(),
        Body::Divider(_) => String::new(),
    };
    let prefix_width: usize = prefix.iter().map(Span::width).sum();
    // Hanging indent past the nickname (less after a long one), never more than half the pane.
    let hanging = if prefix_width <= MAX_INDENT { prefix_width } else { LONG_NICK_INDENT };
    let indent = hanging.min(width / 2).max(TIME_WIDTH.min(width.saturating_sub(1)));
    let rows = wrap_text(&text, width.saturating_sub(prefix_width), width.saturating_sub(indent));
    let mut lines = Vec::with_capacity(rows.len());
    let mut prefix = Some(prefix);
    for row in rows {
        let mut spans = match prefix.take() {
            Some(p) => p,
            None => vec![Span::raw(" ".repeat(indent))],
        };
        spans.push(Span::styled(row, text_style));
        lines.push(Line::from(spans));
    }
    lines
}
