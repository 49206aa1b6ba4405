//! `chatroom-bench`: drive a chatroom relay, and optionally plaintext baselines, with one
//! workload; print a Markdown table and optionally write JSON.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use chatroom_bench::chat::{self, ChatTarget};
use chatroom_bench::commits;
use chatroom_bench::error::BenchError;
use chatroom_bench::plain::{self, Kind, PlainTarget};
use chatroom_bench::{Mode, Outcome, Report, Workload};
use clap::{Parser, ValueEnum};

/// Load generator for the chatroom relay. Connects N members to R rooms, waits until all have
/// joined, has S of them send M messages of B bytes, and reports deliveries/s, sent/s,
/// end-to-end latency, lost, duplicated and corrupted deliveries, and the server's CPU time per
/// delivery and peak memory (given its pid). The same workload runs against each target given,
/// one after the other: --relay, --irc, --raw, --floor.
#[derive(Debug, Parser)]
#[command(name = "chatroom-bench", version)]
struct Cli {
    /// A chatroom relay (HOST:PORT), or the nodes of a relay cluster (HOST:PORT,HOST:PORT...):
    /// member i connects to the (i mod n)-th address.
    #[arg(long, value_name = "HOST:PORT[,...]", value_delimiter = ',')]
    relay: Vec<String>,
    /// The relay's pid, for CPU and memory readings from /proc; several (comma-separated) for
    /// the nodes of a cluster, summed.
    #[arg(long, value_name = "PID[,...]", value_delimiter = ',')]
    relay_pid: Vec<u32>,
    /// Pids of the processes the relay relies on (a cluster's nats-server nodes): their CPU
    /// time per delivery is reported apart from the relay's.
    #[arg(long, value_name = "PID[,...]", value_delimiter = ',')]
    backend_pid: Vec<u32>,
    /// The relay's fingerprint (64 hex digits); without it the key the first relay address
    /// presents is accepted, and every other address must present the same one.
    #[arg(long, value_name = "HEX")]
    fingerprint: Option<String>,
    /// The protocol version the relay's members speak: 1, or 2 (MLS application messages in
    /// signed envelopes, what a v2 room carries).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    protocol: u8,
    /// Seal every chatroom message before the timed phase (latency still runs from the write),
    /// so the generator's sealing does not pace the relay; compares protocol versions fairly.
    #[arg(long)]
    preseal: bool,
    /// An IRC server (HOST:PORT), e.g. ngIRCd with bench/ngircd.conf.
    #[arg(long, value_name = "HOST:PORT")]
    irc: Option<String>,
    /// The IRC server's pid.
    #[arg(long, value_name = "PID")]
    irc_pid: Option<u32>,
    /// A newline-delimited broadcast server (HOST:PORT), e.g. `ncat -l --broker`.
    #[arg(long, value_name = "HOST:PORT")]
    raw: Option<String>,
    /// The broadcast server's pid.
    #[arg(long, value_name = "PID")]
    raw_pid: Option<u32>,
    /// A floor server (HOST:PORT): another chatroom-bench started with --serve-fanout.
    #[arg(long, value_name = "HOST:PORT")]
    floor: Option<String>,
    /// The floor server's pid.
    #[arg(long, value_name = "PID")]
    floor_pid: Option<u32>,
    /// Generate no load: serve the plaintext broadcast protocol on HOST:PORT (loopback) with
    /// TCP_NODELAY and nothing else, the fan-out floor to drive with --floor. Prints
    /// `listening on ADDR`, then serves until killed.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["relay", "irc", "raw", "floor", "commit_probe"])]
    serve_fanout: Option<String>,
    /// Generate no load: time --commits SQLite commits like the relay's (WAL, synchronous
    /// FULL, one 100-byte message's row each) in a scratch database in DIR, at --commit-rate
    /// per second, and print their latency.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["relay", "irc", "raw", "floor"])]
    commit_probe: Option<std::path::PathBuf>,
    /// Commit probe: transactions to time.
    #[arg(long, default_value_t = 1000)]
    commits: usize,
    /// Commit probe: commits per second (P's senders tick 100 times a second); 0: back to back.
    #[arg(long, value_name = "PER_SEC", default_value_t = 100.0)]
    commit_rate: f64,
    /// Workload name shown in the table.
    #[arg(long, default_value = "run")]
    name: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "deliver")]
    mode: ModeArg,
    /// Members in total.
    #[arg(long, short = 'n', default_value_t = 10)]
    members: usize,
    /// Rooms (member i joins room i mod R).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members that send (the first S).
    #[arg(long, short = 's', default_value_t = 10)]
    senders: usize,
    /// Messages per sender.
    #[arg(long, short = 'm', default_value_t = 1000)]
    messages: usize,
    /// Message body size in bytes.
    #[arg(long, short = 'b', default_value_t = 100)]
    bytes: usize,
    /// Messages per second per sender; without it, as fast as possible.
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// Connections set up at once (join phase, and connect mode).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Connect mode: seconds to keep connecting. Idle mode: seconds the members stay idle once
    /// every join notice has arrived, before the server's memory is read.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Stop waiting for deliveries after this many seconds without one.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    settle: f64,
    /// Upper bound on the sending phase of each target, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    timeout: f64,
    /// Append one JSON object per target to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Send and count deliveries.
    Deliver,
    /// Join and hold: server memory per member.
    Idle,
    /// Handshake + join + leave in a loop: joins per second.
    Connect,
}

fn secs(v: f64, flag: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| BenchError::Workload(format!("{flag} must be a non-negative number of seconds")))
}

/// Accepts loopback addresses only: 127.0.0.0/8 (distinct hosts on one machine), `localhost`
/// and `[::1]`.
fn loopback(addr: &str, why: &str) -> Result<(), BenchError> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or_default();
    let ipv4_loopback = host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    if !(ipv4_loopback || matches!(host, "localhost" | "[::1]")) {
        return Err(BenchError::Workload(format!("{addr}: {why}")));
    }
    Ok(())
}

/// `--serve-fanout`: the fan-out floor, until the process is killed.
fn serve_fanout(addr: &str) -> Result<(), BenchError> {
    loopback(addr, "the floor server listens on loopback only (127.0.0.0/8)")?;
    let runtime = tokio::runtime::Runtime::new().map_err(BenchError::io("cannot start the runtime"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(BenchError::io(format!("cannot listen on {addr}")))?;
        let local = listener.local_addr().map_err(BenchError::io("cannot read the local address"))?;
        println!("listening on {local}");
        chatroom_bench::fanout::serve(listener).await.map_err(BenchError::io("accepting connections"))
    })
}

/// `--commit-probe`: the latency of commits like the relay's on this disk.
fn commit_probe(cli: &Cli, dir: &std::path::Path) -> Result<(), BenchError> {
    let rate = (cli.commit_rate > 0.0).then_some(cli.commit_rate);
    let got = commits::measure(dir, commits::CommitProbe { commits: cli.commits, rate })?;
    print!("{}", got.table());
    if let Some(path) = &cli.json {
        let line = serde_json::to_string(&got)
            .map_err(|e| BenchError::io("cannot encode the commit probe")(e.into()))?;
        append_line(path, &line)?;
    }
    Ok(())
}

fn append_line(path: &std::path::Path, line: &str) -> Result<(), BenchError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(BenchError::io(format!("cannot open {}", path.display())))?;
    writeln!(file, "{line}").map_err(BenchError::io(format!("cannot write {}", path.display())))
}

fn run(cli: Cli) -> Result<Report, BenchError> {
    let workload = Workload {
        name: cli.name.clone(),
        mode: match cli.mode {
            ModeArg::Deliver => Mode::Deliver,
            ModeArg::Idle => Mode::Idle,
            ModeArg::Connect => Mode::Connect,
        },
        members: cli.members,
        rooms: cli.rooms,
        senders: if matches!(cli.mode, ModeArg::Deliver) { cli.senders } else { 0 },
        messages: cli.messages,
        bytes: cli.bytes,
        rate: cli.rate,
        concurrency: cli.concurrency,
        duration: secs(cli.duration, "--duration")?,
        settle: secs(cli.settle, "--settle")?,
        timeout: secs(cli.timeout, "--timeout")?,
    };
    workload.validate()?;
    if cli.relay.is_empty() && cli.irc.is_none() && cli.raw.is_none() && cli.floor.is_none() {
        return Err(BenchError::Workload(
            "nothing to drive: give --relay, --irc, --raw and/or --floor HOST:PORT".into(),
        ));
    }
    for addr in cli.relay.iter().chain([&cli.irc, &cli.raw, &cli.floor].into_iter().flatten()) {
        loopback(addr, "the load generator drives loopback servers only (127.0.0.0/8)")?;
    }
    let fingerprint = match &cli.fingerprint {
        Some(hex_fp) => {
            Some(hex::decode(hex_fp).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                BenchError::Workload(
                    "--fingerprint must be 64 hex digits, as chatroom-relay prints it".into(),
                )
            })?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(BenchError::io("cannot start the runtime"))?;
    let mut report = Report::default();
    runtime.block_on(async {
        if !cli.relay.is_empty() {
            let target = ChatTarget {
                addrs: cli.relay.clone(),
                pids: cli.relay_pid.clone(),
                backend_pids: cli.backend_pid.clone(),
                fingerprint,
                protocol: cli.protocol,
                preseal: cli.preseal,
            };
            let result = chat::run(&target, &workload).await;
            report.outcomes.push(failed("chatroom", &workload, result));
        }
        for (kind, addr, pid, label) in [
            (Kind::Irc, &cli.irc, cli.irc_pid, "ngircd"),
            (Kind::Raw, &cli.raw, cli.raw_pid, "ncat"),
            (Kind::Raw, &cli.floor, cli.floor_pid, "floor"),
        ] {
            if let Some(addr) = addr {
                let target = PlainTarget { kind, addr: addr.clone(), label: label.into(), pid };
                let result = plain::run(&target, &workload).await;
                report.outcomes.push(failed(label, &workload, result));
            }
        }
    });
    if let Some(path) = &cli.json {
        for o in &report.outcomes {
            let line = serde_json::to_string(o)
                .map_err(|e| BenchError::io(format!("cannot encode {}", o.target))(e.into()))?;
            append_line(path, &line)?;
        }
    }
    Ok(report)
}

/// A target that failed still gets a row, with the error, so the other targets' figures stand.
fn failed(label: &str, w: &Workload, result: Result<Outcome, BenchError>) -> Outcome {
    result.unwrap_or_else(|e| {
        eprintln!("chatroom-bench: {label}: {e}");
        Outcome {
            target: label.into(),
            workload: w.name.clone(),
            errors: vec![e.to_string()],
            ..Outcome::default()
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let other = if let Some(addr) = &cli.serve_fanout {
        Some(serve_fanout(addr))
    } else {
        cli.commit_probe.clone().map(|dir| commit_probe(&cli, &dir))
    };
    if let Some(result) = other {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chatroom-bench: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatroom-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
