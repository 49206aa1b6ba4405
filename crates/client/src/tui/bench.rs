//! What a long input costs: typed one key at a time with a redraw after each (the worst case:
//! the event loop batches keys that arrive together) and pasted at once. `cargo test` runs it
//! for what it checks (every key and every pasted character reaches the input line); the
//! timings it prints are read from a release build, as docs/BENCHMARKS.md says.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::App;
use super::render::render;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn app() -> App {
    App::with_clock("127.0.0.1:7878", "lobby", "alice", |_| "12:00".into(), || 0)
}

/// Types `n` characters, drawing a 100x30 screen after each key.
fn typed(n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut app = app();
    let mut terminal = Terminal::new(TestBackend::new(100, 30))?;
    let started = Instant::now();
    for i in 0..n {
        let c = char::from(b'a' + (i % 26) as u8);
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        terminal.draw(|f| render(f, &mut app))?;
    }
    let took = started.elapsed();
    assert_eq!(app.editor.text().len(), n);
    Ok(took)
}

/// Pastes `n` characters at once (bracketed paste), then draws.
fn pasted(n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut app = app();
    let mut terminal = Terminal::new(TestBackend::new(100, 30))?;
    let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let started = Instant::now();
    app.on_paste(&text);
    terminal.draw(|f| render(f, &mut app))?;
    let took = started.elapsed();
    assert_eq!(app.editor.text().len(), n);
    Ok(took)
}

#[test]
fn long_input_cost() -> TestResult {
    let (small, large) = (400, 4000);
    // Warm up (allocator, code pages) before measuring.
    typed(small)?;
    let (t_small, t_large) = (typed(small)?, typed(large)?);
    let (p_small, p_large) = (pasted(small)?, pasted(large)?);
    println!("typed {small} chars, a redraw after each: {:.1} ms", t_small.as_secs_f64() * 1e3);
    println!("typed {large} chars, a redraw after each: {:.1} ms", t_large.as_secs_f64() * 1e3);
    println!(
        "ratio {large}/{small} typed: {:.1} (10 is linear)",
        t_large.as_secs_f64() / t_small.as_secs_f64()
    );
    println!("pasted {small} chars and drew: {:.3} ms", p_small.as_secs_f64() * 1e3);
    println!("pasted {large} chars and drew: {:.3} ms", p_large.as_secs_f64() * 1e3);
    Ok(())
}
