//! A guest that counts on the serial console, for tests of the console's
//! stream: one fixed-width line a number, so a byte lost or repeated
//! anywhere between a client's history and its live output shows.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::devices::console::ConsoleOut;

/// Bytes of one counted line: seven digits and a newline.
const LINE: usize = 8;

/// A guest printing its count to `out` without end (sixteen lines a
/// write, a write every few tens of microseconds) until dropped. Not
/// faster: each write is one buffer on a client's socket, and a client
/// whose socket's buffers are all full loses output (counted in
/// `ConsoleOut::dropped`), which says nothing about the seam.
#[derive(Debug)]
pub struct CountingGuest {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CountingGuest {
    pub fn start(mut out: ConsoleOut) -> CountingGuest {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            let mut lines = String::new();
            while !stopping.load(Ordering::SeqCst) {
                lines.clear();
                for _ in 0..16 {
                    lines.push_str(&format!("{n:07}\n"));
                    n += 1;
                }
                out.write_all(lines.as_bytes())
                    .expect("a console write does not fail");
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        CountingGuest {
            stop,
            thread: Some(thread),
        }
    }
}

/// Runs `round` (a client's history and live output, taken while the
/// guest counts) until `rounds` of them were taken with nothing dropped on
/// the way (`dropped`: the console's count of bytes a slow client lost),
/// and asserts that each counts on without a seam. A round in which the
/// client fell behind proves nothing about the seam and is taken again,
/// up to `3 × rounds` times in all. Each round must be a new connection
/// to the console socket.
pub fn assert_rounds_count_on(
    rounds: usize,
    dropped: impl Fn() -> u64,
    mut round: impl FnMut() -> Vec<u8>,
) {
    let mut behind = 0;
    let mut clean = 0;
    while clean < rounds {
        let before = dropped();
        let stream = round();
        if dropped() != before {
            behind += 1;
            assert!(
                behind <= 3 * rounds,
                "the client fell behind {behind} times"
            );
            continue;
        }
        assert_counts_on(&stream);
        clean += 1;
    }
}

impl Drop for CountingGuest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Panics unless the counted lines of `stream` (its first line, maybe cut,
/// left out) run on by one, over more than 100 lines.
pub fn assert_counts_on(stream: &[u8]) {
    let start = stream
        .iter()
        .position(|b| *b == b'\n')
        .expect("a whole line")
        + 1;
    let numbers: Vec<u64> = stream[start..]
        .chunks(LINE)
        .filter(|line| line.len() == LINE)
        .map(|line| {
            std::str::from_utf8(&line[..LINE - 1])
                .ok()
                .and_then(|digits| digits.parse().ok())
                .unwrap_or_else(|| panic!("not a counted line: {line:?}"))
        })
        .collect();
    assert!(numbers.len() > 100, "too short: {} lines", numbers.len());
    for pair in numbers.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "a seam: line {} then {}",
            pair[0],
            pair[1]
        );
    }
}
