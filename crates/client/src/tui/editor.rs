//! The input line: a single-line editor with readline-style keys, a history of sent lines,
//! and nickname completion. No terminal I/O: keys come in as method calls.

use unicode_segmentation::UnicodeSegmentation;

/// Most bytes of message the input line holds: what one message carries. A `/me ` or `//`
/// prefix does not count, as it is not sent; typing beyond is refused at once.
pub(crate) const MAX_INPUT: usize = chatroom_session::crypto::MAX_BODY_LEN;

/// Most lines kept in the history of sent lines.
pub(crate) const MAX_HISTORY: usize = 500;

/// A single line of text with a cursor on a grapheme boundary.
#[derive(Debug, Default)]
pub(crate) struct LineEditor {
    text: String,
    /// Byte offset of the cursor, always on a grapheme boundary.
    cursor: usize,
    history: History,
    completion: Option<Completion>,
    /// The last insertion did not fit.
    full: bool,
}

/// Bytes a line sends: without a `/me ` or `//` prefix.
fn body_len(text: &str) -> usize {
    let prefix = if text.starts_with("/me ") {
        4
    } else if text.starts_with("//") {
        1
    } else {
        0
    };
    text.len() - prefix
}

#[derive(Debug)]
struct Completion {
    /// Byte offset where the completed word starts.
    start: usize,
    /// Candidates, in order.
    matches: Vec<String>,
    /// Which candidate is inserted now.
    index: usize,
    /// What follows the completed word.
    suffix: &'static str,
}

/// Sent lines, browsed with Up and Down; the line being typed is kept aside meanwhile.
#[derive(Debug, Default)]
pub(crate) struct History {
    lines: Vec<String>,
    /// Index into `lines` while browsing; `None` when editing a fresh line.
    browsing: Option<usize>,
    draft: String,
}

impl History {
    /// Records a sent line (not empty, not a repeat of the previous one).
    pub(crate) fn push(&mut self, line: &str) {
        self.browsing = None;
        self.draft.clear();
        if line.trim().is_empty() || self.lines.last().is_some_and(|l| l == line) {
            return;
        }
        if self.lines.len() >= MAX_HISTORY {
            self.lines.remove(0);
        }
        self.lines.push(line.to_owned());
    }

    /// The line before the one shown, given what is being edited now.
    pub(crate) fn older(&mut self, current: &str) -> Option<&str> {
        let next = match self.browsing {
            None if self.lines.is_empty() => return None,
            None => {
                self.draft = current.to_owned();
                self.lines.len() - 1
            }
            Some(0) => return None,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        self.lines.get(next).map(String::as_str)
    }

    /// The line after the one shown; past the newest, the draft that was being typed.
    pub(crate) fn newer(&mut self) -> Option<&str> {
        let i = self.browsing?;
        if i + 1 < self.lines.len() {
            self.browsing = Some(i + 1);
            self.lines.get(i + 1).map(String::as_str)
        } else {
            self.browsing = None;
            Some(&self.draft)
        }
    }

    /// Number of lines kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }
}

impl LineEditor {
    /// The text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The cursor's byte offset.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// Bytes the line would send: without a `/me ` or `//` prefix.
    pub(crate) fn body_len(&self) -> usize {
        body_len(&self.text)
    }

    /// Whether the last insertion was refused for length (cleared by any other edit).
    pub(crate) fn full(&self) -> bool {
        self.full
    }

    fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
    }

    fn prev_boundary(&self, at: usize) -> usize {
        self.text[..at].grapheme_indices(true).next_back().map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, at: usize) -> usize {
        self.text[at..].graphemes(true).next().map_or(at, |g| at + g.len())
    }

    /// Any key other than Tab ends a completion cycle.
    fn edited(&mut self) {
        self.completion = None;
        self.full = false;
    }

    /// Inserts a character at the cursor (control characters are ignored).
    pub(crate) fn insert(&mut self, c: char) {
        let mut buf = [0; 4];
        self.insert_str(c.encode_utf8(&mut buf));
    }

    /// Inserts text at the cursor, without its control characters, as far as it fits in one
    /// message; returns whether all of it fit. Linear in the line's length.
    pub(crate) fn insert_str(&mut self, text: &str) -> bool {
        self.edited();
        let room = MAX_INPUT.saturating_sub(self.body_len());
        let mut clean = String::with_capacity(text.len().min(room));
        let mut fits = true;
        for c in text.chars().filter(|c| !c.is_control()) {
            if clean.len() + c.len_utf8() > room {
                fits = false;
                break;
            }
            clean.push(c);
        }
        // A line starting "/me " or "//" may be typed from "/m" or "/": its prefix then stops
        // counting, so the check above is on the safe side.
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
        // A character can join the grapheme after it (a base before a combining mark): keep
        // the cursor on a grapheme boundary.
        self.cursor = self.next_boundary(self.prev_boundary(self.cursor));
        self.full = !fits;
        fits
    }

    /// Moves one grapheme left.
    pub(crate) fn left(&mut self) {
        self.edited();
        self.cursor = self.prev_boundary(self.cursor);
    }

    /// Moves one grapheme right.
    pub(crate) fn right(&mut self) {
        self.edited();
        self.cursor = self.next_boundary(self.cursor);
    }

    /// Moves to the start (Home, Ctrl-A).
    pub(crate) fn home(&mut self) {
        self.edited();
        self.cursor = 0;
    }

    /// Moves to the end (End, Ctrl-E).
    pub(crate) fn end(&mut self) {
        self.edited();
        self.cursor = self.text.len();
    }

    /// Deletes the grapheme before the cursor (Backspace).
    pub(crate) fn backspace(&mut self) {
        self.edited();
        let start = self.prev_boundary(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the grapheme under the cursor (Delete).
    pub(crate) fn delete(&mut self) {
        self.edited();
        let end = self.next_boundary(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub(crate) fn kill_to_start(&mut self) {
        self.edited();
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// Deletes from the cursor to the end of the line (Ctrl-K).
    pub(crate) fn kill_to_end(&mut self) {
        self.edited();
        self.text.truncate(self.cursor);
    }

    /// Deletes the word before the cursor and the spaces after it (Ctrl-W).
    pub(crate) fn kill_word(&mut self) {
        self.edited();
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(char::is_whitespace);
        let start = trimmed.rfind(char::is_whitespace).map_or(0, |i| {
            // The whitespace character itself stays.
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Takes the line for sending (Enter): records it in the history and clears the editor.
    pub(crate) fn take(&mut self) -> String {
        self.edited();
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.history.push(&line);
        line
    }

    /// Shows the previous line of the history (Up).
    pub(crate) fn history_older(&mut self) {
        self.edited();
        let current = self.text.clone();
        if let Some(line) = self.history.older(&current).map(str::to_owned) {
            self.set(&line);
        }
    }

    /// Shows the next line of the history, or the draft (Down).
    pub(crate) fn history_newer(&mut self) {
        self.edited();
        if let Some(line) = self.history.newer().map(str::to_owned) {
            self.set(&line);
        }
    }

    /// Completes the word before the cursor (Tab): a command name when the line starts with
    /// `/` and the cursor is in its first word, otherwise a nickname from `nicks`. Pressing Tab
    /// again cycles through the other matches.
    pub(crate) fn complete(&mut self, nicks: &[String], commands: &[&str]) {
        let first_word = !self.text[..self.cursor].contains(char::is_whitespace);
        if let Some(c) = &self.completion {
            // Tab again: the next match of the same list.
            let (candidates, suffix) = (c.matches.clone(), c.suffix);
            self.complete_from(&candidates, suffix);
        } else if self.text.starts_with('/') && first_word {
            let commands: Vec<String> = commands.iter().map(|c| (*c).to_owned()).collect();
            self.complete_from(&commands, " ");
        } else {
            self.complete_from(nicks, ": ");
        }
    }

    /// Completes the word before the cursor from `candidates`; at the start of the line
    /// `first_suffix` follows (": " after a nickname, as in IRC), elsewhere a space.
    fn complete_from(&mut self, candidates: &[String], first_suffix: &'static str) {
        if let Some(c) = &mut self.completion {
            if c.matches.len() > 1 {
                let suffix = c.suffix;
                let old_end = c.start + c.matches[c.index].len() + suffix.len();
                c.index = (c.index + 1) % c.matches.len();
                let replacement = format!("{}{suffix}", c.matches[c.index]);
                let old_end = old_end.min(self.text.len());
                self.text.replace_range(c.start..old_end, &replacement);
                self.cursor = c.start + replacement.len();
            }
            return;
        }
        let before = &self.text[..self.cursor];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let prefix = before[start..].to_ascii_lowercase();
        if prefix.is_empty() {
            return;
        }
        let mut matches: Vec<String> =
            candidates.iter().filter(|n| n.to_ascii_lowercase().starts_with(&prefix)).cloned().collect();
        matches.sort_by_key(|n| n.to_ascii_lowercase());
        matches.dedup();
        let Some(first) = matches.first() else { return };
        let addressing = start == 0;
        let suffix = if addressing { first_suffix } else { " " };
        let replacement = format!("{first}{suffix}");
        if body_len(&self.text) - (self.cursor - start).min(body_len(&self.text)) + replacement.len()
            > MAX_INPUT
        {
            return;
        }
        self.text.replace_range(start..self.cursor, &replacement);
        self.cursor = start + replacement.len();
        self.completion = Some(Completion { start, matches, index: 0, suffix });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> LineEditor {
        let mut e = LineEditor::default();
        for c in s.chars() {
            e.insert(c);
        }
        e
    }

    #[test]
    fn typing_and_moving() {
        let mut e = typed("helo");
        e.left();
        e.insert('l');
        assert_eq!((e.text(), e.cursor()), ("hello", 4));
        e.home();
        e.insert('>');
        e.end();
        e.insert('!');
        assert_eq!(e.text(), ">hello!");
        e.home();
        e.delete();
        e.end();
        e.backspace();
        assert_eq!((e.text(), e.cursor()), ("hello", 5));
        e.right();
        assert_eq!(e.cursor(), 5, "right at the end stays");
        e.home();
        e.left();
        e.backspace();
        assert_eq!((e.text(), e.cursor()), ("hello", 0), "left and backspace at the start do nothing");
    }

    #[test]
    fn moves_by_grapheme_over_wide_and_combined_characters() {
        let mut e = typed("a日👩‍👩‍👧e\u{301}");
        assert_eq!(e.cursor(), e.text().len());
        e.left();
        assert_eq!(&e.text()[e.cursor()..], "e\u{301}", "e + combining acute is one grapheme");
        e.left();
        assert_eq!(&e.text()[e.cursor()..], "👩‍👩‍👧e\u{301}", "the family emoji is one grapheme");
        e.backspace();
        assert_eq!(e.text(), "a👩‍👩‍👧e\u{301}");
        e.delete();
        assert_eq!(e.text(), "ae\u{301}");
    }

    #[test]
    fn control_characters_are_not_inserted() {
        let e = typed("a\u{1b}[2J\nb\u{7}");
        assert_eq!(e.text(), "a[2Jb");
    }

    #[test]
    fn input_is_bounded_by_one_message_and_says_when_full() {
        let mut e = LineEditor::default();
        for _ in 0..MAX_INPUT + 10 {
            e.insert('x');
        }
        assert_eq!(e.text().len(), MAX_INPUT);
        assert!(e.full(), "the refused key is remembered for the counter");
        e.left();
        assert!(!e.full());
        let mut e = typed("/me ");
        assert!(!e.insert_str(&"y".repeat(MAX_INPUT + 1)), "a paste that does not fit");
        assert_eq!((e.text().len(), e.body_len()), (MAX_INPUT + 4, MAX_INPUT), "the /me prefix is not sent");
        let mut e = typed("ab");
        e.left();
        assert!(e.insert_str("1\n2\u{1b}3"));
        assert_eq!(
            (e.text(), e.cursor()),
            ("a123b", 4),
            "inserted at the cursor, control characters dropped"
        );
    }

    #[test]
    fn tab_completes_commands_at_the_start_of_the_line() {
        let nicks: Vec<String> = vec!["whitney".into()];
        let commands = ["/help", "/who", "/whois", "/quit"];
        let mut e = typed("/wh");
        e.complete(&nicks, &commands);
        assert_eq!(e.text(), "/who ");
        e.complete(&nicks, &commands);
        assert_eq!(e.text(), "/whois ");
        let mut e = typed("/kick wh");
        e.complete(&nicks, &commands);
        assert_eq!(e.text(), "/kick whitney ", "nicknames after the command");
    }

    #[test]
    fn kill_keys() {
        let mut e = typed("one two  three");
        e.kill_word();
        assert_eq!(e.text(), "one two  ");
        e.kill_word();
        assert_eq!(e.text(), "one ");
        e.kill_word();
        assert_eq!(e.text(), "");
        let mut e = typed("keep this");
        for _ in 0..4 {
            e.left();
        }
        e.kill_to_start();
        assert_eq!((e.text(), e.cursor()), ("this", 0));
        e.right();
        e.kill_to_end();
        assert_eq!(e.text(), "t");
    }

    #[test]
    fn history_browses_and_restores_the_draft() {
        let mut e = LineEditor::default();
        for line in ["first", "second", "second", "", "third"] {
            for c in line.chars() {
                e.insert(c);
            }
            e.take();
        }
        assert_eq!(e.history.len(), 3, "empty lines and immediate repeats are not kept");
        for c in "draft".chars() {
            e.insert(c);
        }
        e.history_older();
        assert_eq!(e.text(), "third");
        e.history_older();
        e.history_older();
        assert_eq!(e.text(), "first");
        e.history_older();
        assert_eq!(e.text(), "first", "stops at the oldest");
        e.history_newer();
        assert_eq!(e.text(), "second");
        e.history_newer();
        e.history_newer();
        assert_eq!((e.text(), e.cursor()), ("draft", 5), "past the newest comes the draft back");
        e.history_newer();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        for i in 0..MAX_HISTORY + 20 {
            h.push(&i.to_string());
        }
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(h.older(""), Some((MAX_HISTORY + 19).to_string().as_str()));
    }

    #[test]
    fn tab_completes_nicknames_and_cycles() {
        let nicks: Vec<String> = ["alice", "Albert", "bob"].iter().map(|s| s.to_string()).collect();
        let mut e = typed("al");
        e.complete(&nicks, &[]);
        assert_eq!(e.text(), "Albert: ", "at the start: sorted case-insensitively, with a colon");
        e.complete(&nicks, &[]);
        assert_eq!(e.text(), "alice: ");
        e.complete(&nicks, &[]);
        assert_eq!(e.text(), "Albert: ");
        for c in "hi B".chars() {
            e.insert(c);
        }
        e.complete(&nicks, &[]);
        assert_eq!((e.text(), e.cursor()), ("Albert: hi bob ", 15));
        let mut e = typed("zed");
        e.complete(&nicks, &[]);
        assert_eq!(e.text(), "zed", "no match: unchanged");
        let mut e = typed("x ");
        e.complete(&nicks, &[]);
        assert_eq!(e.text(), "x ", "nothing to complete after a space");
    }
}
