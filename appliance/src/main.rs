//! `sfera-install`: installs the Sfera appliance from its live system.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use appliance::answer::{self, Plan};
use appliance::console::Say;
use appliance::discover::{self, ANSWER_MOUNT};
use appliance::install::{self, Options};
use appliance::interactive::Prompter;
use appliance::inventory::Inventory;
use appliance::password;

/// Where live-boot mounts the boot medium (the ISO or USB stick).
const MEDIUM: &str = "/run/live/medium";

/// Installs Sfera on this machine's disk: unattended from an answer file,
/// or by asking on the console.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The root file system image to install.
    #[arg(long, default_value = "/run/live/medium/live/filesystem.squashfs")]
    squashfs: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// What the live system runs: find an answer file (sfera.answer=, the
    /// boot medium's sfera/answer.toml, a disk labelled SFERA-ANSWER) and
    /// install from it, or ask on the console when there is none.
    Auto {
        /// Do not reboot when done.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Check an answer file against this machine; write nothing.
    Check { answer: PathBuf },
    /// Install from an answer file.
    Run {
        answer: PathBuf,
        #[arg(long)]
        no_reboot: bool,
    },
    /// Ask the questions on this terminal and install.
    Interactive {
        #[arg(long)]
        no_reboot: bool,
    },
    /// Print the argon2 hash of a password read from stdin, for an answer
    /// file's admin.password_hash.
    HashPassword,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut say = Say::new();
    match run(args, &mut say) {
        Ok(code) => code,
        Err(e) => {
            say.line(&format!("sfera-install: error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn inventory() -> Inventory {
    Inventory::read(&[
        (Path::new(MEDIUM), "the installer was booted from it"),
        (Path::new(ANSWER_MOUNT), "it holds the answer file"),
    ])
}

fn run(args: Args, say: &mut Say) -> Result<ExitCode> {
    let options = Options {
        squashfs: args.squashfs,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    match args.command {
        Cmd::Auto { no_reboot } => {
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            match discover::find(&cmdline, Path::new(MEDIUM)) {
                Err(e) => {
                    stopped(say, &e);
                    Ok(ExitCode::FAILURE)
                }
                Ok(Some(found)) => {
                    say.line(&format!("sfera-install: answer file: {}", found.place));
                    unattended(&found.text, &found.place, &options, no_reboot, say)
                }
                Ok(None) => {
                    say.line("sfera-install: no answer file; asking on the console");
                    interactive(&options, no_reboot, say)
                }
            }
        }
        Cmd::Check { answer } => {
            let text = std::fs::read_to_string(&answer)
                .with_context(|| format!("Cannot read {}", answer.display()))?;
            match plan(&text, &answer.display().to_string(), say) {
                Some(p) => {
                    say.line(&format!("{p:#?}"));
                    Ok(ExitCode::SUCCESS)
                }
                None => Ok(ExitCode::FAILURE),
            }
        }
        Cmd::Run { answer, no_reboot } => {
            let text = std::fs::read_to_string(&answer)
                .with_context(|| format!("Cannot read {}", answer.display()))?;
            unattended(
                &text,
                &answer.display().to_string(),
                &options,
                no_reboot,
                say,
            )
        }
        Cmd::Interactive { no_reboot } => interactive(&options, no_reboot, say),
        Cmd::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let p = line.trim_end_matches(['\n', '\r']);
            password::check_strength(p).map_err(|e| anyhow::anyhow!("The password {e}"))?;
            say.line(&password::hash(p).map_err(anyhow::Error::msg)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Validates an answer file; on problems, says so and that nothing was
/// written.
fn plan(text: &str, place: &str, say: &mut Say) -> Option<Plan> {
    let result = answer::parse(text).and_then(|a| answer::validate(&a, &inventory()));
    match result {
        Ok(p) => Some(p),
        Err(problems) => {
            stopped(
                say,
                &format!("The answer file {place} is not valid:\n{problems}"),
            );
            None
        }
    }
}

fn stopped(say: &mut Say, why: &str) {
    say.line(&format!(
        "\nsfera-install: {}\nsfera-install: installation stopped; nothing was written to any disk.\n\
         Fix the answer file and boot the installer again.\n",
        why.trim_end()
    ));
}

fn unattended(
    text: &str,
    place: &str,
    options: &Options,
    no_reboot: bool,
    say: &mut Say,
) -> Result<ExitCode> {
    let Some(plan) = plan(text, place, say) else {
        return Ok(ExitCode::FAILURE);
    };
    say.line(&format!(
        "sfera-install: unattended install on /dev/{} ({}), host {}, management NIC {} ({})",
        plan.disk.name,
        answer::human_bytes(plan.disk.size_bytes),
        plan.hostname,
        plan.nic.name,
        plan.nic.mac
    ));
    finish(&plan, options, no_reboot, say)
}

fn interactive(options: &Options, no_reboot: bool, say: &mut Say) -> Result<ExitCode> {
    let tty = std::io::stdin().is_terminal();
    let stdin = std::io::stdin().lock();
    let plan = Prompter::new(stdin, std::io::stdout(), tty).run(&inventory())?;
    let Some(plan) = plan else {
        say.line("sfera-install: cancelled; nothing was written to any disk.");
        return Ok(ExitCode::FAILURE);
    };
    finish(&plan, options, no_reboot, say)
}

fn finish(plan: &Plan, options: &Options, no_reboot: bool, say: &mut Say) -> Result<ExitCode> {
    install::install(plan, options, say)?;
    if let Some(cd) = medium_cd() {
        let _ = std::process::Command::new("eject").arg(&cd).status();
    }
    if no_reboot {
        return Ok(ExitCode::SUCCESS);
    }
    say.line("sfera-install: rebooting into the installed system");
    let status = std::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("Cannot run systemctl reboot")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The boot medium's device when it is a CD drive (`/dev/sr0`), to eject
/// it so the machine boots from its disk next.
fn medium_cd() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    appliance::inventory::parse_mountinfo(&text)
        .into_iter()
        .find(|(dev, at)| at == MEDIUM && dev.starts_with("/dev/sr"))
        .map(|(dev, _)| dev.into())
}
