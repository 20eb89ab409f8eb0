//! A libblkio load generator: fixed-size random reads or writes at a fixed
//! queue depth on every queue of a [`BlkioClient`], for a fixed time.

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use blkio::{Blkioq, Completion, ReqFlags};
use harness::blkio_client::BlkioClient;

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    /// `randread` or `randwrite`, as fio names them.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Read => "randread",
            Direction::Write => "randwrite",
        }
    }
}

/// One load to run.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub direction: Direction,
    pub block_size: usize,
    pub depth: usize,
    pub queues: usize,
    pub duration: Duration,
    /// Bytes of the device the offsets are drawn from.
    pub span: u64,
}

impl LoadSpec {
    /// Buffer bytes the client needs: one block per request in flight.
    pub fn buffer_len(&self) -> usize {
        self.block_size * self.depth * self.queues
    }
}

/// What a load achieved.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub ios: u64,
    pub elapsed: Duration,
    /// Completion latencies in nanoseconds, sorted.
    pub latencies_ns: Vec<u32>,
}

impl LoadResult {
    /// I/Os per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies_ns.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_ns[rank.min(self.latencies_ns.len() - 1)]) / 1000.0
    }
}

/// Runs `spec` on `client`, one thread per queue.
pub fn run(client: &mut BlkioClient, spec: &LoadSpec) -> Result<LoadResult> {
    if client.queues().len() < spec.queues {
        bail!(
            "client has {} queues, load needs {}",
            client.queues().len(),
            spec.queues
        );
    }
    let base = client.buffer_addr();
    let per_queue = spec.block_size * spec.depth;
    let start = Instant::now();
    let results: Vec<Result<(u64, Vec<u32>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = client
            .queues()
            .iter_mut()
            .take(spec.queues)
            .enumerate()
            .map(|(i, q)| {
                let buffer = base + i * per_queue;
                scope.spawn(move || drive_queue(q, buffer, spec, i as u64 + 1))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("load thread panicked")))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut ios = 0;
    let mut latencies_ns = Vec::new();
    for r in results {
        let (n, lat) = r?;
        ios += n;
        latencies_ns.extend(lat);
    }
    latencies_ns.sort_unstable();
    Ok(LoadResult {
        ios,
        elapsed,
        latencies_ns,
    })
}

/// Keeps `spec.depth` requests in flight on one queue until the time is up.
fn drive_queue(
    q: &mut Blkioq,
    buffer: usize,
    spec: &LoadSpec,
    seed: u64,
) -> Result<(u64, Vec<u32>)> {
    let blocks = spec.span / spec.block_size as u64;
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next_offset = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % blocks) * spec.block_size as u64
    };
    let mut started = vec![Instant::now(); spec.depth];
    let submit = |q: &mut Blkioq, slot: usize, offset: u64| {
        let buf = buffer + slot * spec.block_size;
        match spec.direction {
            Direction::Read => q.read(
                offset,
                buf as *mut u8,
                spec.block_size,
                slot,
                ReqFlags::empty(),
            ),
            Direction::Write => {
                q.write(
                    offset,
                    buf as *const u8,
                    spec.block_size,
                    slot,
                    ReqFlags::empty(),
                );
            }
        }
    };
    for (slot, t) in started.iter_mut().enumerate() {
        *t = Instant::now();
        submit(q, slot, next_offset());
    }
    let deadline = Instant::now() + spec.duration;
    let mut completions: Vec<MaybeUninit<Completion>> =
        (0..spec.depth).map(|_| MaybeUninit::uninit()).collect();
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut in_flight = spec.depth;
    let mut ios = 0u64;
    while in_flight > 0 {
        let n = q
            .do_io(&mut completions, 1, None, None)
            .map_err(|e| anyhow::anyhow!("do_io: {}", e.message()))?;
        let now = Instant::now();
        let more = now < deadline;
        for c in &completions[..n] {
            // SAFETY: do_io initialised the first `n` completions.
            let c = unsafe { c.assume_init_read() };
            if c.ret < 0 {
                bail!("I/O failed with errno {}", -c.ret);
            }
            let slot = c.user_data;
            let ns = now.duration_since(started[slot]).as_nanos();
            latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
            ios += 1;
            if more {
                started[slot] = now;
                submit(q, slot, next_offset());
            } else {
                in_flight -= 1;
            }
        }
    }
    Ok((ios, latencies))
}
