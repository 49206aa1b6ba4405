//! `chatroom-bench-mls`: what protocol version 2 costs a client at several group sizes, beside
//! version 1 and the password's Argon2id derivation measured in the same run (see
//! `chatroom_bench::mls_costs`). Prints a Markdown table and the ratios docs/BENCHMARKS.md
//! records.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use chatroom_bench::mls_costs::{self, Row, ENTRY, MESSAGE_V1, MESSAGE_V2, UPDATE};
use chatroom_crypto::KdfParams;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Measure protocol v2's client costs (MLS) beside v1 and Argon2id, in one run")]
struct Cli {
    /// Group sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    members: Vec<usize>,
    /// Repetitions of each commit (messages: 50 times as many); medians are reported.
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Argon2id derivations for the baseline (the default parameters, m65536t3p1).
    #[arg(long, default_value_t = 3)]
    argon2id_reps: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(Vec<Row>, f64, f64), chatroom_bench::error::BenchError> {
        let before = mls_costs::argon2id_us(KdfParams::DEFAULT, cli.argon2id_reps)?;
        let rows = mls_costs::measure(&cli.members, cli.reps)?;
        let after = mls_costs::argon2id_us(KdfParams::DEFAULT, cli.argon2id_reps)?;
        Ok((rows, before, after))
    };
    match run() {
        Ok((rows, before, after)) => {
            print!("{}", report(&rows, before, after));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatroom-bench-mls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(rows: &[Row], argon_before: f64, argon_after: f64) -> String {
    let argon = (argon_before + argon_after) / 2.0;
    let mut out = format!(
        "Argon2id m65536t3p1 (v2 derivation): {:.1} ms CPU before, {:.1} ms after; baseline {:.1} ms\n\n",
        argon_before / 1e3,
        argon_after / 1e3,
        argon / 1e3
    );
    out.push_str(
        "| members | operation | make (µs CPU) | process (µs CPU) | bytes |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let process = r.process_us.map_or("-".to_string(), |p| format!("{p:.1}"));
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} |\n",
            r.members, r.operation, r.create_us, process, r.bytes
        ));
    }
    out.push_str("\n| ratio | value |\n|---|---|\n");
    let find = |n: usize, op: &str| rows.iter().find(|r| r.members == n && r.operation == op);
    let sizes: Vec<usize> = rows.iter().map(|r| r.members).fold(Vec::new(), |mut v, n| {
        if !v.contains(&n) {
            v.push(n);
        }
        v
    });
    for &n in &sizes {
        if let (Some(v2), Some(v1)) = (find(n, MESSAGE_V2), find(n, MESSAGE_V1)) {
            out.push_str(&format!(
                "| message make, v2 / v1, {n} members | {:.2} |\n",
                v2.create_us / v1.create_us
            ));
            let (p2, p1) = (v2.process_us.unwrap_or(0.0), v1.process_us.unwrap_or(0.0));
            out.push_str(&format!("| message open, v2 / v1, {n} members | {:.2} |\n", p2 / p1));
            out.push_str(&format!(
                "| message bytes, v2 / v1, {n} members | {:.2} |\n",
                v2.bytes as f64 / v1.bytes as f64
            ));
        }
        if let Some(e) = find(n, ENTRY) {
            out.push_str(&format!("| entry make / Argon2id, {n} members | {:.3} |\n", e.create_us / argon));
        }
        if let Some(u) = find(n, UPDATE) {
            out.push_str(&format!("| update make / Argon2id, {n} members | {:.3} |\n", u.create_us / argon));
        }
    }
    for pair in sizes.windows(2) {
        if let (Some(a), Some(b)) = (find(pair[0], UPDATE), find(pair[1], UPDATE)) {
            out.push_str(&format!(
                "| update make, {} / {} members | {:.2} |\n",
                pair[1],
                pair[0],
                b.create_us / a.create_us
            ));
        }
    }
    out
}
