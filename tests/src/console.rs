//! Driving a serial console, or any line-oriented program, from a test.
//!
//! A reader thread collects everything the other side prints into a
//! transcript (and a log file); the test waits for text with a deadline and
//! types lines. [`Console::run`] runs a shell command and returns its output
//! and exit status, framed by markers that cannot be confused with the
//! terminal's echo of the command line.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How many transcript lines error messages show.
const TAIL_LINES: usize = 25;

#[derive(Debug, Default)]
struct Transcript {
    data: Vec<u8>,
    eof: bool,
}

#[derive(Debug, Default)]
struct Shared {
    transcript: Mutex<Transcript>,
    grew: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Transcript> {
        // A poisoned lock only means the reader thread panicked mid-append;
        // the bytes collected so far are still worth reading.
        self.transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The output and exit status of a command run through [`Console::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub output: String,
    pub status: i32,
}

/// A console: a byte stream to read from and one to type into.
pub struct Console {
    name: String,
    shared: Arc<Shared>,
    input: Box<dyn Write + Send>,
    cursor: usize,
    next_marker: u64,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("name", &self.name)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// Starts collecting `output` (copied to `log` as it arrives) and types
    /// into `input`.
    pub fn new(
        name: &str,
        output: impl Read + Send + 'static,
        input: impl Write + Send + 'static,
        log: &Path,
    ) -> Result<Self> {
        let log_file =
            File::create(log).map_err(|e| Error::io("Cannot create console log", log, e))?;
        let shared = Arc::new(Shared::default());
        let reader_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("console-{name}"))
            .spawn(move || collect(output, log_file, &reader_shared))
            .map_err(|source| Error::Spawn {
                name: format!("console reader for {name}"),
                source,
            })?;
        Ok(Console {
            name: name.to_owned(),
            shared,
            input: Box::new(input),
            cursor: 0,
            next_marker: 1,
        })
    }

    /// Everything received so far, with carriage returns removed.
    pub fn transcript(&self) -> String {
        clean(&self.shared.lock().data)
    }

    /// The last `lines` lines received.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.transcript();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Types `text` as is.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.input
            .write_all(text.as_bytes())
            .and_then(|()| self.input.flush())
            .map_err(|e| {
                Error::io(
                    format!("Cannot type into the console of {}", self.name),
                    "",
                    e,
                )
            })
    }

    /// Types `line` and a newline.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.send(&format!("{line}\n"))
    }

    /// Waits for a complete line containing `needle` that arrived after what
    /// earlier waits consumed; returns that line and consumes through it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let needle_bytes = needle.as_bytes();
        self.wait_match(needle, timeout, |data| {
            let at = find(data, needle_bytes)?;
            let after = at + needle_bytes.len();
            let end = after + find(&data[after..], b"\n")?;
            let start = data[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            Some((end + 1, clean(&data[start..end])))
        })
    }

    /// Waits for `needle` anywhere after what earlier waits consumed; returns
    /// the text before it and consumes through it.
    pub fn wait_for_text(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let needle_bytes = needle.as_bytes();
        self.wait_match(needle, timeout, |data| {
            let at = find(data, needle_bytes)?;
            Some((at + needle_bytes.len(), clean(&data[..at])))
        })
    }

    fn wait_match<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        matcher: impl Fn(&[u8]) -> Option<(usize, T)>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let shared = Arc::clone(&self.shared);
        let mut transcript = shared.lock();
        loop {
            if let Some((consumed, value)) = matcher(&transcript.data[self.cursor..]) {
                self.cursor += consumed;
                return Ok(value);
            }
            if transcript.eof {
                return Err(Error::ConsoleClosed {
                    name: self.name.clone(),
                    what: format!("{what:?}"),
                    tail: tail_of(&transcript.data, TAIL_LINES),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what:?} on the console of {}", self.name),
                    timeout,
                    context: tail_of(&transcript.data, TAIL_LINES),
                });
            }
            transcript = shared
                .grew
                .wait_timeout(transcript, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `command` in the shell on the other side and returns its output
    /// and exit status. The command runs with stdin from `/dev/null`, in the
    /// shell itself (so `cd` and variables persist), and must not end in `&`.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<CommandOutput> {
        let n = self.next_marker;
        self.next_marker += 1;
        // The quotes split each marker in the echoed command line, so only
        // the shell's output can contain the marker itself.
        let begin = format!("@@SFERA-B{n}@@");
        let end = format!("@@SFERA-E{n}@@=");
        self.send_line(&format!(
            "echo '@@SFERA-B{n}''@@'; {{ {command} ; }} </dev/null; echo '@@SFERA-E{n}''@@='$?"
        ))?;
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        self.wait_for_line(&begin, left())?;
        let output = self.wait_for_text(&end, left())?;
        let status_text = self.wait_for_text("\n", left())?;
        let status = status_text.trim().parse().map_err(|_| Error::Parse {
            what: format!("exit status of `{command}` on {}", self.name),
            text: status_text.clone(),
        })?;
        Ok(CommandOutput { output, status })
    }

    /// Like [`Console::run`], but a non-zero exit status is an error that
    /// carries the output.
    pub fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let result = self.run(command, timeout)?;
        if result.status == 0 {
            Ok(result.output)
        } else {
            Err(Error::GuestCommand {
                name: self.name.clone(),
                command: command.to_owned(),
                status: result.status,
                output: result.output,
            })
        }
    }
}

fn collect(mut output: impl Read, mut log: File, shared: &Shared) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match output.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // The log is for people reading it after a failure; losing it must
        // not stop the console.
        let _ = log.write_all(&buf[..n]);
        shared.lock().data.extend_from_slice(&buf[..n]);
        shared.grew.notify_all();
    }
    shared.lock().eof = true;
    shared.grew.notify_all();
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn tail_of(bytes: &[u8], lines: usize) -> String {
    let text = clean(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn shell(dir: &Path) -> (std::process::Child, Console) {
        let mut child = Command::new("sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let console = Console::new(
            "sh",
            child.stdout.take().unwrap(),
            child.stdin.take().unwrap(),
            &dir.join("console.log"),
        )
        .unwrap();
        (child, console)
    }

    #[test]
    fn run_captures_output_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, mut console) = shell(dir.path());
        let out = console
            .run("echo hello; echo world", Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            out,
            CommandOutput {
                output: "hello\nworld\n".into(),
                status: 0
            }
        );
        let out = console
            .run(
                "exit_code() { return 7; }; exit_code",
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(out.status, 7);
        let err = console
            .run_ok("false", Duration::from_secs(10))
            .unwrap_err();
        assert!(
            matches!(err, Error::GuestCommand { status: 1, .. }),
            "{err}"
        );
        // State persists between commands, as in an interactive shell.
        console
            .run_ok("cd /; X=5", Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            console
                .run_ok("echo $X $PWD", Duration::from_secs(10))
                .unwrap(),
            "5 /\n"
        );
        drop(console);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A terminal echoes what is typed; the markers must still frame only the
    /// command's own output.
    #[test]
    fn echoed_command_lines_do_not_confuse_markers() {
        let dir = tempfile::tempdir().unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (typed_reader, typed_writer) = std::io::pipe().unwrap();
        let mut console =
            Console::new("fake-tty", reader, typed_writer, &dir.path().join("log")).unwrap();
        // A fake terminal: echo each typed line, then answer as sh would.
        let tty = std::thread::spawn(move || {
            let mut typed = std::io::BufReader::new(typed_reader);
            let mut line = String::new();
            std::io::BufRead::read_line(&mut typed, &mut line).unwrap();
            writer
                .write_all(format!("guest# {}\r\n", line.trim_end()).as_bytes())
                .unwrap();
            let out = Command::new("sh")
                .arg("-c")
                .arg(line.trim_end())
                .output()
                .unwrap();
            writer.write_all(&out.stdout).unwrap();
        });
        let out = console
            .run("echo inner; false", Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            out,
            CommandOutput {
                output: "inner\n".into(),
                status: 1
            }
        );
        tty.join().unwrap();
    }

    #[test]
    fn waits_time_out_with_the_transcript_and_detect_eof() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "echo booting; sleep 1; echo partial-line"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut console = Console::new(
            "boot",
            child.stdout.take().unwrap(),
            std::io::sink(),
            &dir.path().join("log"),
        )
        .unwrap();
        assert_eq!(
            console
                .wait_for_line("boot", Duration::from_secs(10))
                .unwrap(),
            "booting"
        );
        let err = console
            .wait_for_line("READY", Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { ref context, .. } if context.contains("booting")));
        let err = console
            .wait_for_line("READY", Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(err, Error::ConsoleClosed { ref tail, .. } if tail.contains("partial")));
        child.wait().unwrap();
        assert!(
            std::fs::read_to_string(dir.path().join("log"))
                .unwrap()
                .contains("partial-line")
        );
    }
}
