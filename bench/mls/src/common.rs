//! Timing, statistics and output shared by both implementations.

use std::time::{Duration, Instant};

/// Result type of the measurement: errors become text, the program stops on the first one.
pub type Res<T> = Result<T, String>;

/// Turns any library error into the program's error text.
pub fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

/// The external PSK id every member uses (the secret itself comes from the room password).
pub const PSK_ID: &[u8] = b"chatroom/2 room psk";
/// Stand-in for the HKDF output of the room password (the measurement does not run Argon2id
/// per member; `argon2_ms` measures one derivation separately).
pub const PSK_SECRET: [u8; 32] = [0x42; 32];
/// What a joiner with the wrong password derives.
pub const WRONG_PSK_SECRET: [u8; 32] = [0x43; 32];

/// Group sizes measured, and repetitions of each operation per size.
pub const SIZES: [usize; 3] = [10, 100, 500];
pub const REPS: usize = 7;

/// Wall-clock and process CPU time (all threads) of one run.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
}

fn cpu_now() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

/// Runs `f` once and returns its result with its cost.
pub fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, Cost)> {
    let (start, cpu) = (Instant::now(), cpu_now());
    let out = f()?;
    Ok((out, Cost { wall: start.elapsed(), cpu: cpu_now().saturating_sub(cpu) }))
}

/// Samples of one operation at one group size.
#[derive(Debug, Default)]
pub struct Samples {
    pub create: Vec<Cost>,
    pub process: Vec<Cost>,
    pub bytes: Vec<usize>,
}

impl Samples {
    pub fn push(&mut self, create: Cost, process: Cost, bytes: usize) {
        self.create.push(create);
        self.process.push(process);
        self.bytes.push(bytes);
    }
}

fn median_ms(v: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

/// One output line: implementation, members, operation, median create and process time, the
/// median message size. Tab-separated so docs/BENCHMARKS.md can quote it.
pub fn report(imp: &str, members: usize, op: &str, s: &Samples) {
    let mut b = s.bytes.clone();
    b.sort_unstable();
    let bytes = b.get(b.len() / 2).copied().unwrap_or(0);
    let wall = |v: &[Cost]| median_ms(&v.iter().map(|c| c.wall).collect::<Vec<_>>());
    let cpu = |v: &[Cost]| median_ms(&v.iter().map(|c| c.cpu).collect::<Vec<_>>());
    println!(
        "{imp}\t{members}\t{op}\tcreate_cpu_ms={:.2}\tprocess_cpu_ms={:.2}\t\
         create_wall_ms={:.2}\tprocess_wall_ms={:.2}\tbytes={bytes}\tn={}",
        cpu(&s.create),
        cpu(&s.process),
        wall(&s.create),
        wall(&s.process),
        s.create.len()
    );
}

/// One informational line (sizes, build times).
pub fn note(imp: &str, members: usize, what: &str, value: impl std::fmt::Display) {
    println!("{imp}\t{members}\t{what}\t{value}");
}

/// One Argon2id derivation at chatroom's default parameters (m65536t3p1, 32-byte output), the
/// baseline the commit costs are compared with. Medians of `reps`: (CPU, wall) milliseconds.
pub fn argon2_ms(reps: usize) -> Res<(f64, f64)> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(65_536, 3, 1, Some(32)).map_err(err("argon2 params"))?;
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut samples = Vec::new();
    for i in 0..reps {
        let mut out = [0u8; 32];
        let salt = [i as u8; 32];
        let ((), d) = timed(|| {
            a.hash_password_into(b"correct horse battery staple", &salt, &mut out).map_err(err("argon2"))
        })?;
        samples.push(d);
    }
    let cpu: Vec<Duration> = samples.iter().map(|c| c.cpu).collect();
    let wall: Vec<Duration> = samples.iter().map(|c| c.wall).collect();
    Ok((median_ms(&cpu), median_ms(&wall)))
}
