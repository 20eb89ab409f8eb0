//! `sfera`: Sfera's command line, on mgmtd's /api/v1 (in the spirit of
//! govc). `sfera login` saves an API token; SFERA_SERVER, SFERA_TOKEN and
//! SFERA_CA_CERT override what is saved.

#![forbid(unsafe_code)]

mod changes;

mod config;
mod console;
mod hosts;

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use mgmt::api::auth::{Login, TokenCreate};
use mgmt::client::{self, Client};
use mgmt::db::Boot;
use mgmt::driver::Driver;
use mgmt::import::{ImageFormat, ImportDisk};
use mgmt::vm::request::{CreateVm, TINY_LINUX};

const DEFAULT_SERVER: &str = "https://127.0.0.1:8443";

/// Manage Sfera: VMs, datastores and networks.
#[derive(Debug, Parser)]
#[command(name = "sfera", version)]
struct Args {
    /// mgmtd's URL [env: SFERA_SERVER; default: the saved one, or https://127.0.0.1:8443].
    #[arg(long, global = true)]
    server: Option<String>,
    /// The certificate to trust for HTTPS (mgmtd's <data-dir>/tls/cert.pem) [env: SFERA_CA_CERT].
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the API's JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Log in and save an API token for the next commands.
    Login {
        #[arg(long, default_value = "admin")]
        user: String,
        /// Read the password from the first line of stdin (default: ask,
        /// or SFERA_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Datastores.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Switches and port groups.
    #[command(subcommand)]
    Network(changes::NetworkCmd),
    /// Tasks.
    #[command(subcommand)]
    Task(ListCmd),
    /// The cluster's hosts.
    #[command(subcommand)]
    Host(hosts::HostCmd),
}

#[derive(Debug, Subcommand)]
enum ListCmd {
    List,
}

#[derive(Debug, Subcommand)]
enum DatastoreCmd {
    List,
    /// Import a disk image file (raw, qcow2 or vmdk) from mgmtd's import
    /// directory (<data-dir>/import) as a new volume, through qemu-img
    /// convert. Images that name other files (backing files, external
    /// extents) are refused.
    Import {
        datastore: String,
        /// The new volume: NAME or FOLDER/NAME.
        volume: String,
        /// The image file on mgmtd's host (an absolute path inside an
        /// import directory).
        source: String,
        #[arg(long, value_parser = ["raw", "qcow2", "vmdk"])]
        format: String,
    },
    /// Unregister a datastore that holds no VM's disk (its files stay).
    Remove {
        name: String,
    },
    /// Volumes of a datastore.
    #[command(subcommand)]
    Volume(changes::VolumeCmd),
}

// Parsed once per run: the size of the Create variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum VmCmd {
    List,
    Show {
        vm: String,
    },
    /// Create a VM (from the Tiny Linux template unless --kernel or
    /// --boot-disk is given).
    Create(VmCreate),
    /// Change a VM: its name at any time, the rest while it is stopped.
    Edit(changes::VmEdit),
    /// Power on.
    Start {
        vm: String,
    },
    /// Power off (the power cord).
    Stop {
        vm: String,
    },
    Reset {
        vm: String,
    },
    /// Pause (stop the vCPUs; memory and devices stay).
    Pause {
        vm: String,
    },
    /// Resume a paused VM.
    Resume {
        vm: String,
    },
    /// Shut the guest down through its ACPI power button (QEMU VMs); a
    /// guest that is not off within --timeout is left running.
    Shutdown {
        vm: String,
        /// Seconds the guest has to stop, 1 to 3600 (default 120).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
        timeout: Option<u32>,
    },
    /// Restart the guest gracefully: shut it down, then power on.
    Reboot {
        vm: String,
        /// Seconds the guest has to stop, 1 to 3600 (default 120).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
        timeout: Option<u32>,
    },
    /// Delete a stopped VM; its disks stay unless --disks.
    Delete {
        vm: String,
        #[arg(long)]
        disks: bool,
    },
    /// Attach this terminal to the VM's serial console (Ctrl-] leaves).
    Console {
        vm: String,
    },
}

// The variant's doc comment is the command's help.
#[derive(Debug, clap::Args)]
struct VmCreate {
    name: String,
    #[arg(long)]
    template: Option<String>,
    /// Boot this kernel (instead of a template).
    #[arg(long)]
    kernel: Option<String>,
    #[arg(long)]
    initrd: Option<String>,
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// A new disk, DATASTORE:SIZE (SIZE with K, M, G, T), repeatable.
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// An existing volume as a disk (an imported image),
    /// DATASTORE:VOLUME, repeatable; after the new disks.
    #[arg(long = "attach")]
    attach: Vec<String>,
    /// Boot the first disk through firmware (QEMU) instead of a kernel.
    #[arg(long, conflicts_with_all = ["kernel", "template"])]
    boot_disk: bool,
    /// A NIC, PORT_GROUP or PORT_GROUP=MAC, repeatable.
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// Power it on once created.
    #[arg(long)]
    power_on: bool,
    /// The hypervisor driver (default: the host's choice, see `GET
    /// /api/v1/host`).
    #[arg(long, value_parser = ["sfera-vmm", "qemu"])]
    driver: Option<String>,
}

/// Parses `4096`, `512K`, `10G`...
fn parse_size(text: &str) -> Result<u64> {
    Ok(control::size::parse_size(text)?)
}

fn print(text: &str) {
    // The CLI's answer is its output.
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
}

fn table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        print(line.join("  ").trim_end());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn gib(v: &Value) -> String {
    v.as_u64().map_or("-".to_owned(), |b| {
        format!("{:.1}G", b as f64 / f64::from(1u32 << 30))
    })
}

/// Waits for a task to end; its result, or its error as an error.
async fn wait_task(client: &Client, task: &Value) -> Result<Value> {
    let id = task["id"].as_i64().context("the answer is not a task")?;
    loop {
        let t = client
            .call(Method::GET, &format!("/api/v1/tasks/{id}"), None)
            .await?;
        match t["state"].as_str() {
            Some("success") => return Ok(t["result"].clone()),
            Some("error") => bail!("{} failed: {}", s(&t["kind"]), s(&t["error"])),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn read_password(stdin: bool) -> Result<String> {
    if !stdin && let Ok(p) = std::env::var("SFERA_PASSWORD") {
        return Ok(p);
    }
    let tty = !stdin && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if tty {
        eprint!("Password: ");
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.context("Cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Prints `v`: as one line of JSON with --json, else indented.
fn print_value(v: &Value, json_out: bool) {
    print(&if json_out {
        v.to_string()
    } else {
        serde_json::to_string_pretty(v).unwrap_or_default()
    });
}

async fn run(args: Args) -> Result<()> {
    // Joining runs on this host's files, before any mgmtd answers here.
    let command = match args.command {
        Cmd::Host(hosts::HostCmd::Join(a)) => return hosts::join(a, args.json).await,
        other => other,
    };
    let saved = config::load();
    let server = args
        .server
        .or_else(|| std::env::var("SFERA_SERVER").ok())
        .or_else(|| saved.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let ca_cert = args
        .ca_cert
        .or_else(|| std::env::var_os("SFERA_CA_CERT").map(PathBuf::from))
        .or_else(|| saved.ca_cert.clone());
    let token = std::env::var("SFERA_TOKEN")
        .ok()
        .or_else(|| saved.token.clone());
    let mut client = Client::new(&server, token, ca_cert.as_deref())?;
    let json_out = args.json;
    match command {
        Cmd::Login {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            login(&mut client, &server, ca_cert, &user, &password, json_out).await?;
        }
        Cmd::Vm(cmd) => vm(&client, cmd, json_out).await?,
        Cmd::Datastore(cmd) => datastore(&client, cmd, json_out).await?,
        Cmd::Network(changes::NetworkCmd::List) => {
            list(&client, &PORT_GROUPS, json_out, port_group_row).await?;
        }
        Cmd::Network(cmd) => changes::network(&client, cmd, json_out).await?,
        Cmd::Task(ListCmd::List) => list(&client, &TASKS, json_out, task_row).await?,
        Cmd::Host(hosts::HostCmd::List) => list(&client, &HOSTS, json_out, host_row).await?,
        Cmd::Host(hosts::HostCmd::JoinToken { ttl }) => {
            hosts::join_token(&client, ttl, json_out).await?;
        }
        Cmd::Host(hosts::HostCmd::Join(a)) => hosts::join(a, json_out).await?,
        Cmd::Host(hosts::HostCmd::Remove { name }) => {
            hosts::remove(&client, &name, json_out).await?;
        }
        Cmd::Host(hosts::HostCmd::Maintenance { action, name }) => {
            hosts::maintenance(&client, action, &name, json_out).await?;
        }
    }
    Ok(())
}

/// `sfera login`: makes an API token through a login session, saves it
/// with the server and the certificate, and says where.
async fn login(
    client: &mut Client,
    server: &str,
    ca_cert: Option<PathBuf>,
    user: &str,
    password: &str,
    json_out: bool,
) -> Result<()> {
    let secret = new_token(client, user, password).await?;
    let path = config::save(&config::Saved {
        server: Some(server.to_owned()),
        token: Some(secret.clone()),
        ca_cert: ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p)),
    })?;
    client.set_token(secret);
    if json_out {
        print_value(
            &json!({ "server": server, "user": user, "config": path }),
            json_out,
        );
    } else {
        eprintln!(
            "Logged in to {server} as {user}; token saved in {}",
            path.display()
        );
    }
    Ok(())
}

/// Logs in, makes an API token named after this host, and logs out: the
/// token's secret.
async fn new_token(client: &Client, user: &str, password: &str) -> Result<String> {
    let login = client
        .send(
            Method::POST,
            "/api/v1/session",
            Some(&client::to_body(&Login {
                username: user.to_owned(),
                password: password.to_owned(),
            })?),
            None,
        )
        .await?;
    client::json_of(&login)?;
    let cookie = login
        .set_cookie
        .as_deref()
        .and_then(|c| c.split(';').next())
        .context("mgmtd set no session cookie")?
        .to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let made = client
        .send(
            Method::POST,
            "/api/v1/tokens",
            Some(&client::to_body(&TokenCreate {
                name: format!("sfera CLI on {}", host.trim()),
            })?),
            Some(&cookie),
        )
        .await?;
    let token = client::json_of(&made)?;
    let secret = token["token"].as_str().context("no token in the answer")?;
    // The session was only needed to make the token.
    let _ = client
        .send(Method::DELETE, "/api/v1/session", None, Some(&cookie))
        .await;
    Ok(secret.to_owned())
}

async fn datastore(client: &Client, cmd: DatastoreCmd, json_out: bool) -> Result<()> {
    match cmd {
        DatastoreCmd::Import {
            datastore,
            volume,
            source,
            format,
        } => {
            let body = ImportDisk {
                volume: volume.clone(),
                source: source.clone(),
                format: image_format(&format)?,
            };
            let task = client
                .call_with(
                    Method::POST,
                    &format!(
                        "/api/v1/datastores/{}/import",
                        mgmt::blockd::encode_segment(&datastore)
                    ),
                    &body,
                )
                .await?;
            let result = wait_task(client, &task).await?;
            if json_out {
                print_value(&result, json_out);
            } else {
                eprintln!(
                    "Imported {source} as {datastore}/{volume} ({} bytes)",
                    s(&result["size_bytes"])
                );
            }
        }
        DatastoreCmd::List => list(client, &DATASTORES, json_out, datastore_row).await?,
        DatastoreCmd::Remove { name } => {
            changes::remove_datastore(client, &name, json_out).await?;
        }
        DatastoreCmd::Volume(cmd) => changes::volume(client, cmd, json_out).await?,
    }
    Ok(())
}

/// A collection `sfera ... list` shows: where the API has it, which array
/// of the answer holds its items, and the table's columns.
struct Listing {
    path: &'static str,
    items: &'static str,
    header: &'static [&'static str],
}

const DATASTORES: Listing = Listing {
    path: "/api/v1/datastores",
    items: "items",
    header: &["NAME", "CAPACITY", "FREE", "VOLUMES", "PATH"],
};
const PORT_GROUPS: Listing = Listing {
    path: "/api/v1/networks",
    items: "port_groups",
    header: &["PORT GROUP", "SWITCH", "VLAN"],
};
const TASKS: Listing = Listing {
    path: "/api/v1/tasks?limit=20",
    items: "items",
    header: &["ID", "KIND", "TARGET", "STATE", "PROGRESS", "USER"],
};
const HOSTS: Listing = Listing {
    path: "/api/v1/hosts?limit=500",
    items: "items",
    header: &[
        "NAME", "STATE", "CPUS", "MEMORY", "FREE", "VMS", "KVM", "DRIVER",
    ],
};
const VMS: Listing = Listing {
    path: "/api/v1/vms",
    items: "items",
    header: &[
        "NAME", "ID", "STATE", "DRIVER", "VCPUS", "MEMORY", "DISKS", "NICS",
    ],
};

/// Lists a collection: its JSON with --json, else a table of one `row`
/// per item.
async fn list(
    client: &Client,
    what: &Listing,
    json_out: bool,
    row: fn(&Value) -> Vec<String>,
) -> Result<()> {
    let v = client.call(Method::GET, what.path, None).await?;
    if json_out {
        print_value(&v, json_out);
        return Ok(());
    }
    let mut rows = vec![what.header.iter().map(|h| (*h).to_owned()).collect()];
    for item in v[what.items]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        rows.push(row(item));
    }
    table(&rows);
    Ok(())
}

fn datastore_row(d: &Value) -> Vec<String> {
    vec![
        s(&d["name"]),
        gib(&d["capacity_bytes"]),
        gib(&d["free_bytes"]),
        s(&d["volumes"]),
        s(&d["path"]),
    ]
}

fn port_group_row(g: &Value) -> Vec<String> {
    let vlan = match g["vlan"]["mode"].as_str() {
        Some("access") => format!("access {}", s(&g["vlan"]["id"])),
        Some("trunk") => format!("trunk {}", g["vlan"]["allowed"]),
        _ => "none".to_owned(),
    };
    vec![s(&g["name"]), s(&g["switch"]), vlan]
}

fn host_row(h: &Value) -> Vec<String> {
    let name = match h["this_host"].as_bool() {
        Some(true) => format!("{} (this)", s(&h["name"])),
        _ => s(&h["name"]),
    };
    vec![
        name,
        s(&h["state"]).replace('_', " "),
        s(&h["facts"]["cpus"]),
        gib(&h["facts"]["memory_bytes"]),
        gib(&h["usage"]["memory_free_bytes"]),
        format!(
            "{}/{}",
            s(&h["usage"]["vms_running"]),
            s(&h["usage"]["vms"])
        ),
        s(&h["facts"]["kvm_kind"]),
        s(&h["facts"]["default_driver"]),
    ]
}

fn task_row(t: &Value) -> Vec<String> {
    vec![
        s(&t["id"]),
        s(&t["kind"]),
        s(&t["target"]),
        s(&t["state"]),
        format!("{}%", s(&t["progress"])),
        s(&t["user"]),
    ]
}

fn vm_row(m: &Value) -> Vec<String> {
    vec![
        s(&m["name"]),
        s(&m["id"]),
        s(&m["state"]),
        s(&m["driver"]),
        s(&m["vcpus"]),
        format!("{}M", s(&m["memory_mib"])),
        m["disks"].as_array().map_or(0, Vec::len).to_string(),
        m["nics"].as_array().map_or(0, Vec::len).to_string(),
    ]
}

/// The API path of a VM (by name or ID).
fn vm_path(vm: &str) -> String {
    format!("/api/v1/vms/{}", mgmt::blockd::encode_segment(vm))
}

async fn vm(client: &Client, cmd: VmCmd, json_out: bool) -> Result<()> {
    match cmd {
        VmCmd::List => list(client, &VMS, json_out, vm_row).await?,
        VmCmd::Show { vm } => print_value(
            &client.call(Method::GET, &vm_path(&vm), None).await?,
            json_out,
        ),
        VmCmd::Create(c) => create_vm(client, c, json_out).await?,
        VmCmd::Edit(args) => changes::vm_edit(client, args, json_out).await?,
        VmCmd::Start { vm } => power(client, &vm_path(&vm), "on", json_out).await?,
        VmCmd::Stop { vm } => power(client, &vm_path(&vm), "off", json_out).await?,
        VmCmd::Reset { vm } => power(client, &vm_path(&vm), "reset", json_out).await?,
        VmCmd::Pause { vm } => power(client, &vm_path(&vm), "pause", json_out).await?,
        VmCmd::Resume { vm } => power(client, &vm_path(&vm), "resume", json_out).await?,
        VmCmd::Shutdown { vm, timeout } => {
            power(
                client,
                &vm_path(&vm),
                &guest_stop("shutdown", timeout),
                json_out,
            )
            .await?;
        }
        VmCmd::Reboot { vm, timeout } => {
            power(
                client,
                &vm_path(&vm),
                &guest_stop("reboot", timeout),
                json_out,
            )
            .await?;
        }
        VmCmd::Delete { vm, disks } => delete_vm(client, &vm, disks, json_out).await?,
        VmCmd::Console { vm } => {
            let v = client.call(Method::GET, &vm_path(&vm), None).await?;
            console::attach(client, &s(&v["id"]), &s(&v["name"])).await?;
        }
    }
    Ok(())
}

async fn create_vm(client: &Client, c: VmCreate, json_out: bool) -> Result<()> {
    let body = create_body(c)?;
    let task = client.call_with(Method::POST, "/api/v1/vms", &body).await?;
    let result = wait_task(client, &task).await?;
    let id = s(&result["id"]);
    let vm = client.call(Method::GET, &vm_path(&id), None).await?;
    if json_out {
        print_value(&vm, json_out);
    } else {
        eprintln!("Created {} ({id}), {}", s(&vm["name"]), s(&vm["state"]));
    }
    Ok(())
}

/// The API's request to create the VM `sfera vm create` describes.
fn create_body(c: VmCreate) -> Result<CreateVm> {
    let (boot, template) = match c.kernel {
        Some(kernel) => {
            let boot = Boot::Kernel {
                kernel,
                initrd: c.initrd,
                cmdline: c.cmdline,
            };
            (Some(boot), None)
        }
        None if c.boot_disk => (Some(Boot::Disk), None),
        None => (
            None,
            Some(c.template.unwrap_or_else(|| TINY_LINUX.to_owned())),
        ),
    };
    let mut disks = Vec::new();
    for spec in &c.disks {
        disks.push(changes::new_disk("--disk", spec)?);
    }
    for spec in &c.attach {
        disks.push(changes::attached_disk("--attach", spec)?);
    }
    Ok(CreateVm {
        name: c.name,
        template,
        vcpus: c.vcpus,
        memory_mib: c.memory,
        boot,
        disks,
        nics: c.nics.iter().map(|n| changes::nic(n)).collect(),
        power_on: c.power_on,
        driver: c.driver.as_deref().map(Driver::parse),
    })
}

/// `--format`, as the API's image format.
fn image_format(name: &str) -> Result<ImageFormat> {
    serde_json::from_value(Value::from(name)).with_context(|| format!("--format {name:?}"))
}

async fn delete_vm(client: &Client, vm: &str, disks: bool, json_out: bool) -> Result<()> {
    let task = client
        .call(
            Method::DELETE,
            &format!("{}?disks={disks}", vm_path(vm)),
            None,
        )
        .await?;
    let result = wait_task(client, &task).await?;
    if json_out {
        print_value(&result, json_out);
    } else {
        eprintln!(
            "Deleted {vm}{}",
            if disks {
                " with its disks"
            } else {
                "; its disks stay"
            }
        );
    }
    Ok(())
}

/// A shutdown or reboot as its path under `power/`, with its timeout.
fn guest_stop(action: &str, timeout: Option<u32>) -> String {
    match timeout {
        Some(t) => format!("{action}?timeout_s={t}"),
        None => action.to_owned(),
    }
}

async fn power(client: &Client, vm_path: &str, action: &str, json_out: bool) -> Result<()> {
    let task = client
        .call(Method::POST, &format!("{vm_path}/power/{action}"), None)
        .await?;
    let result = wait_task(client, &task).await?;
    if json_out {
        print(&result.to_string());
    } else {
        eprintln!("{}: {}", s(&result["id"]), s(&result["state"]));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, without a backtrace.
            eprintln!("sfera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_and_reboot_take_a_timeout() {
        let cmd = |args: &[&str]| {
            Args::try_parse_from(["sfera", "vm"].iter().chain(args))
                .map(|a| format!("{:?}", a.command))
        };
        assert!(
            cmd(&["shutdown", "web", "--timeout", "30"])
                .unwrap()
                .contains("Some(30)")
        );
        assert!(cmd(&["reboot", "web"]).unwrap().contains("timeout: None"));
        assert!(cmd(&["shutdown", "web", "--timeout", "0"]).is_err());
        assert!(cmd(&["shutdown", "web", "--timeout", "3601"]).is_err());
        assert_eq!(guest_stop("shutdown", Some(5)), "shutdown?timeout_s=5");
        assert_eq!(guest_stop("reboot", None), "reboot");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("x").is_err());
    }

    /// `sfera vm create`'s body is the API's `CreateVm`, in the JSON the
    /// CLI has always sent (`driver` null when not chosen).
    #[test]
    fn create_bodies() {
        let create = |args: &[&str]| {
            let a = Args::try_parse_from(["sfera", "vm", "create"].iter().chain(args)).unwrap();
            let Cmd::Vm(VmCmd::Create(c)) = a.command else {
                panic!("not vm create");
            };
            serde_json::to_value(create_body(c).unwrap()).unwrap()
        };
        assert_eq!(
            create(&["t1", "--disk", "local:1M", "--nic", "pg=52:54:00:00:00:01"]),
            json!({ "name": "t1", "template": "tiny-linux", "power_on": false, "driver": null,
                    "disks": [{ "datastore": "local", "size_bytes": 1 << 20 }],
                    "nics": [{ "port_group": "pg", "mac": "52:54:00:00:00:01" }] })
        );
        assert_eq!(
            create(&[
                "fw",
                "--boot-disk",
                "--attach",
                "local:d1",
                "--nic",
                "pg",
                "--vcpus",
                "2",
                "--driver",
                "qemu",
                "--power-on"
            ]),
            json!({ "name": "fw", "boot": { "kind": "disk" }, "vcpus": 2, "power_on": true,
                    "driver": "qemu", "disks": [{ "datastore": "local", "volume": "d1" }],
                    "nics": [{ "port_group": "pg" }] })
        );
    }

    #[test]
    fn arguments() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "sfera",
            "vm",
            "create",
            "t1",
            "--disk",
            "local:1G",
            "--nic",
            "vm-network",
            "--json",
        ])
        .unwrap();
        assert!(a.json);
        assert!(matches!(a.command, Cmd::Vm(VmCmd::Create(_))));
        let a = Args::try_parse_from(["sfera", "vm", "pause", "t1"]).unwrap();
        assert!(matches!(a.command, Cmd::Vm(VmCmd::Pause { .. })));
        let a = Args::try_parse_from([
            "sfera",
            "datastore",
            "import",
            "local",
            "imports/d1",
            "/tmp/d1.qcow2",
            "--format",
            "qcow2",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            Cmd::Datastore(DatastoreCmd::Import { .. })
        ));
        assert!(Args::try_parse_from(["sfera", "vm", "create", "t", "--driver", "xen"]).is_err());
        let a = Args::try_parse_from([
            "sfera",
            "vm",
            "create",
            "fw",
            "--boot-disk",
            "--attach",
            "local:imports/d1",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            Cmd::Vm(VmCmd::Create(VmCreate {
                boot_disk: true,
                ..
            }))
        ));
        let both = [
            "sfera",
            "vm",
            "create",
            "fw",
            "--boot-disk",
            "--kernel",
            "/k",
        ];
        assert!(Args::try_parse_from(both).is_err());
    }
}
