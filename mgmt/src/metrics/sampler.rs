//! The sampling loop: one round every interval, each a set of points
//! written in one transaction, then the rollups brought up to date.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prometheus::{self, Sample};
use crate::db::metrics::Point;
use crate::db::{Vm, VmState, now};
use crate::service::Mgmt;

/// Linux's USER_HZ, the unit of `/proc/<pid>/stat`'s CPU times: 100 on
/// every architecture mgmtd runs on.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Counters as last read, to turn the next reading into a rate.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<String, (f64, Instant)>,
}

impl Rates {
    /// The per-second rate of a counter since its last reading; `None`
    /// on its first reading and when it went backwards (its daemon
    /// restarted).
    pub fn rate(&mut self, key: String, value: f64, at: Instant) -> Option<f64> {
        let previous = self.last.insert(key, (value, at));
        let (before, then) = previous?;
        let dt = at.checked_duration_since(then)?.as_secs_f64();
        (value >= before && dt > 0.0).then(|| (value - before) / dt)
    }

    /// Forgets counters not read in this round (deleted exports, ports,
    /// stopped VMs).
    fn keep_only(&mut self, at: Instant) {
        self.last.retain(|_, (_, t)| *t == at);
    }
}

/// Sums of rates, by metric, for one object.
#[derive(Debug, Default)]
struct Sums(HashMap<&'static str, f64>);

impl Sums {
    fn add(&mut self, metric: &'static str, v: Option<f64>) {
        if let Some(v) = v {
            *self.0.entry(metric).or_default() += v;
        }
    }
    fn points(self, kind: &'static str, object: &str, out: &mut Vec<Point>) {
        let mut v: Vec<_> = self.0.into_iter().collect();
        v.sort_by_key(|(m, _)| *m);
        out.extend(v.into_iter().map(|(metric, value)| Point {
            kind,
            object: object.to_owned(),
            metric,
            value,
        }));
    }

    /// Adds the bytes per second of every export and every port: the
    /// host's disk and network throughput.
    fn add_io_totals(&mut self, io: &IoRates) {
        for sums in io.exports.values() {
            for (m, h) in [
                ("read_bytes_per_s", "disk_read_bytes_per_s"),
                ("write_bytes_per_s", "disk_write_bytes_per_s"),
            ] {
                self.add(h, sums.0.get(m).copied());
            }
        }
        for sums in io.ports.values() {
            for (m, h) in [
                ("rx_bytes_per_s", "net_rx_bytes_per_s"),
                ("tx_bytes_per_s", "net_tx_bytes_per_s"),
            ] {
                self.add(h, sums.0.get(m).copied());
            }
        }
    }
}

/// `(busy, total)` jiffies of all CPUs, from `/proc/stat`.
pub fn host_cpu(stat: &str) -> Option<(f64, f64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

/// Used memory (total minus available) from `/proc/meminfo`, in bytes.
pub fn host_memory_used(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    };
    Some(field("MemTotal:")? - field("MemAvailable:")?)
}

/// CPU time (user + system) of a process in seconds, from
/// `/proc/<pid>/stat`.
pub fn process_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields count
    // from after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_S)
}

/// What one round read, before rates.
#[derive(Debug, Default)]
pub struct Reading {
    pub host_cpu: Option<(f64, f64)>,
    pub host_memory_used: Option<f64>,
    pub blockd: Vec<Sample>,
    pub vswitchd: Vec<Sample>,
    /// CPU seconds of each running VM's QEMU, by VM id.
    pub vm_cpu: HashMap<String, f64>,
}

/// One round's rates of the exports and of the ports, by name.
#[derive(Debug, Default)]
struct IoRates {
    exports: HashMap<String, Sums>,
    ports: HashMap<String, Sums>,
}

/// Turns a reading into points.
pub fn points(rates: &mut Rates, at: Instant, host: &str, vms: &[Vm], r: &Reading) -> Vec<Point> {
    let mut out = Vec::new();
    let mut host_sums = host_usage(rates, at, r);
    let io = IoRates {
        exports: export_rates(rates, at, &r.blockd),
        ports: port_rates(rates, at, &r.vswitchd),
    };
    host_sums.add_io_totals(&io);
    host_sums.points("host", host, &mut out);
    for vm in vms {
        vm_points(rates, at, vm, r.vm_cpu.get(&vm.id), &io, &mut out);
    }
    // Every port is a chart of its own, a VM's or not.
    let mut ports = io.ports;
    let mut names: Vec<_> = ports.keys().cloned().collect();
    names.sort();
    for name in names {
        if let Some(p) = ports.remove(&name) {
            p.points("port", &name, &mut out);
        }
    }
    rates.keep_only(at);
    out
}

/// The host's CPU use (in percent) and used memory.
fn host_usage(rates: &mut Rates, at: Instant, r: &Reading) -> Sums {
    let mut host_sums = Sums::default();
    if let Some((busy, total)) = r.host_cpu {
        let b = rates.rate("host:busy".into(), busy, at);
        let t = rates.rate("host:total".into(), total, at);
        if let (Some(b), Some(t)) = (b, t)
            && t > 0.0
        {
            host_sums.add("cpu_percent", Some(100.0 * b / t));
        }
    }
    host_sums.add("memory_used_bytes", r.host_memory_used);
    host_sums
}

/// The rates of blockd's exports, by export.
fn export_rates(rates: &mut Rates, at: Instant, blockd: &[Sample]) -> HashMap<String, Sums> {
    let mut exports: HashMap<String, Sums> = HashMap::new();
    for s in blockd {
        let Some(export) = s.label("export") else {
            continue;
        };
        let metric = match (s.name.as_str(), s.label("direction"), s.label("op")) {
            ("sfera_blk_bytes_total", Some("read"), _) => "read_bytes_per_s",
            ("sfera_blk_bytes_total", Some("write"), _) => "write_bytes_per_s",
            ("sfera_blk_requests_total", _, Some("read")) => "read_ops_per_s",
            ("sfera_blk_requests_total", _, Some("write")) => "write_ops_per_s",
            _ => continue,
        };
        let rate = rates.rate(format!("blk:{export}:{metric}"), s.value, at);
        exports
            .entry(export.to_owned())
            .or_default()
            .add(metric, rate);
    }
    exports
}

/// The rates of vswitchd's ports, by port (drops of all reasons summed).
fn port_rates(rates: &mut Rates, at: Instant, vswitchd: &[Sample]) -> HashMap<String, Sums> {
    let mut ports: HashMap<String, Sums> = HashMap::new();
    for s in vswitchd {
        let Some(port) = s.label("port") else {
            continue;
        };
        let metric = match s.name.as_str() {
            "sfera_vswitch_port_rx_bytes_total" => "rx_bytes_per_s",
            "sfera_vswitch_port_tx_bytes_total" => "tx_bytes_per_s",
            "sfera_vswitch_port_rx_packets_total" => "rx_packets_per_s",
            "sfera_vswitch_port_tx_packets_total" => "tx_packets_per_s",
            "sfera_vswitch_port_drops_total" => "drops_per_s",
            _ => continue,
        };
        let reason = s.label("reason").unwrap_or_default();
        let rate = rates.rate(format!("net:{port}:{metric}:{reason}"), s.value, at);
        ports.entry(port.to_owned()).or_default().add(metric, rate);
    }
    ports
}

/// The points of a VM's volumes, then (while it runs) of the VM: its
/// disks' and NICs' rates summed, and its CPU use from `cpu`, its CPU
/// seconds.
fn vm_points(
    rates: &mut Rates,
    at: Instant,
    vm: &Vm,
    cpu: Option<&f64>,
    io: &IoRates,
    out: &mut Vec<Point>,
) {
    let mut sums = Sums::default();
    for d in &vm.disks {
        let Some(e) = io.exports.get(&d.export_id) else {
            continue;
        };
        let mut volume = Sums::default();
        for (m, v) in &e.0 {
            volume.add(m, Some(*v));
            sums.add(
                match *m {
                    "read_bytes_per_s" => "disk_read_bytes_per_s",
                    "write_bytes_per_s" => "disk_write_bytes_per_s",
                    "read_ops_per_s" => "disk_read_ops_per_s",
                    _ => "disk_write_ops_per_s",
                },
                Some(*v),
            );
        }
        volume.points("volume", &format!("{}/{}", d.datastore, d.volume), out);
    }
    for n in &vm.nics {
        let Some(p) = io.ports.get(&n.port) else {
            continue;
        };
        for (m, v) in &p.0 {
            let vm_metric = match *m {
                "rx_bytes_per_s" => "net_rx_bytes_per_s",
                "tx_bytes_per_s" => "net_tx_bytes_per_s",
                "rx_packets_per_s" => "net_rx_packets_per_s",
                "tx_packets_per_s" => "net_tx_packets_per_s",
                _ => continue,
            };
            sums.add(vm_metric, Some(*v));
        }
    }
    if matches!(vm.state, VmState::Running | VmState::Paused) {
        if let Some(cpu) = cpu {
            let rate = rates.rate(format!("vm:{}:cpu", vm.id), *cpu, at);
            sums.add("cpu_percent", rate.map(|r| r * 100.0));
        }
        sums.points("vm", &vm.id, out);
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Reads everything a round needs; a daemon that cannot be asked is left
/// out of this round.
async fn read_all(mgmt: &Mgmt, vms: &[Vm]) -> Reading {
    let blockd = match mgmt.blockd.metrics().await {
        Ok(t) => prometheus::parse(&t),
        Err(e) => {
            tracing::debug!("No blockd metrics this round: {e}");
            Vec::new()
        }
    };
    let vswitchd = match mgmt.vswitchd.metrics().await {
        Ok(t) => prometheus::parse(&t),
        Err(e) => {
            tracing::debug!("No vswitchd metrics this round: {e}");
            Vec::new()
        }
    };
    let vm_cpu = vms
        .iter()
        .filter_map(|vm| {
            let pid = vm
                .pid
                .filter(|_| matches!(vm.state, VmState::Running | VmState::Paused))?;
            let stat = read(Path::new(&format!("/proc/{pid}/stat")))?;
            Some((vm.id.clone(), process_cpu_seconds(&stat)?))
        })
        .collect();
    Reading {
        host_cpu: read(Path::new("/proc/stat")).and_then(|s| host_cpu(&s)),
        host_memory_used: read(Path::new("/proc/meminfo")).and_then(|s| host_memory_used(&s)),
        blockd,
        vswitchd,
        vm_cpu,
    }
}

/// Samples every `every` forever.
pub async fn run(mgmt: Arc<Mgmt>, every: Duration) {
    let mut rates = Rates::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let vms = match mgmt.inventory.vms_here().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("Sampling: cannot list VMs: {e}");
                continue;
            }
        };
        let reading = read_all(&mgmt, &vms).await;
        let at = Instant::now();
        let points = points(&mut rates, at, &mgmt.host.hostname, &vms, &reading);
        let t = now();
        if let Err(e) = mgmt
            .db
            .insert_samples(t, &points)
            .and_then(|()| mgmt.db.roll_up(t))
        {
            tracing::warn!(
                "Cannot store performance samples: {e}: {}",
                std::error::Error::source(&e).map_or_else(String::new, ToString::to_string)
            );
        }
        mgmt.own_metrics.sampler_round(started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Boot, VmDisk, VmNic};

    fn vm() -> Vm {
        Vm {
            id: "vm-1".into(),
            name: "tiny".into(),
            host: "a".into(),
            resource_version: 1,
            vcpus: 1,
            memory_mib: 512,
            boot: Boot::Kernel {
                kernel: "k".into(),
                initrd: None,
                cmdline: String::new(),
            },
            driver: "qemu".into(),
            driver_reason: String::new(),
            state: VmState::Running,
            pid: Some(1),
            disks: vec![VmDisk {
                datastore: "local".into(),
                volume: "tiny/disk0".into(),
                size_bytes: 1 << 30,
                export_id: "vm-1-disk0".into(),
            }],
            nics: vec![VmNic {
                port_group: "vm-network".into(),
                mac: "52:54:00:00:00:01".into(),
                port: "vm-1-nic0".into(),
            }],
            created_at: 0,
            updated_at: 0,
        }
    }

    fn reading(scale: f64) -> Reading {
        let blk = format!(
            "sfera_blk_bytes_total{{export=\"vm-1-disk0\",direction=\"read\"}} {}\n\
             sfera_blk_bytes_total{{export=\"vm-1-disk0\",direction=\"write\"}} {}\n\
             sfera_blk_requests_total{{export=\"vm-1-disk0\",op=\"write\"}} {}\n\
             sfera_blk_requests_total{{export=\"vm-1-disk0\",op=\"flush\"}} 5\n",
            1000.0 * scale,
            4096.0 * scale,
            2.0 * scale
        );
        let net = format!(
            "sfera_vswitch_port_tx_bytes_total{{port=\"vm-1-nic0\",port_group=\"g\",switch=\"s\"}} {}\n\
             sfera_vswitch_port_tx_packets_total{{port=\"vm-1-nic0\",port_group=\"g\",switch=\"s\"}} {}\n\
             sfera_vswitch_port_drops_total{{port=\"vm-1-nic0\",reason=\"runt\"}} {}\n\
             sfera_vswitch_port_drops_total{{port=\"vm-1-nic0\",reason=\"forged_source\"}} {}\n\
             sfera_vswitch_port_rx_bytes_total{{port=\"other\",port_group=\"g\",switch=\"s\"}} 7\n",
            600.0 * scale,
            10.0 * scale,
            scale,
            scale
        );
        Reading {
            host_cpu: Some((50.0 * scale, 200.0 * scale)),
            host_memory_used: Some(1e9),
            blockd: prometheus::parse(&blk),
            vswitchd: prometheus::parse(&net),
            vm_cpu: HashMap::from([("vm-1".to_owned(), 0.5 * scale)]),
        }
    }

    fn find(points: &[Point], kind: &str, object: &str, metric: &str) -> Option<f64> {
        points
            .iter()
            .find(|p| p.kind == kind && p.object == object && p.metric == metric)
            .map(|p| p.value)
    }

    #[test]
    fn counters_become_rates_per_object() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        let vms = [vm()];
        let first = points(&mut rates, t0, "h", &vms, &reading(1.0));
        // The first round has no rates, only gauges.
        assert_eq!(find(&first, "host", "h", "memory_used_bytes"), Some(1e9));
        assert_eq!(find(&first, "vm", "vm-1", "cpu_percent"), None);
        // Ten seconds later every counter has doubled.
        let second = points(
            &mut rates,
            t0 + Duration::from_secs(10),
            "h",
            &vms,
            &reading(2.0),
        );
        let get = |k, o, m| find(&second, k, o, m);
        assert_eq!(get("host", "h", "cpu_percent"), Some(25.0));
        assert_eq!(
            get("volume", "local/tiny/disk0", "read_bytes_per_s"),
            Some(100.0)
        );
        assert_eq!(
            get("volume", "local/tiny/disk0", "write_ops_per_s"),
            Some(0.2)
        );
        assert_eq!(get("vm", "vm-1", "disk_write_bytes_per_s"), Some(409.6));
        assert_eq!(get("vm", "vm-1", "net_tx_bytes_per_s"), Some(60.0));
        assert_eq!(get("vm", "vm-1", "net_tx_packets_per_s"), Some(1.0));
        assert_eq!(get("vm", "vm-1", "cpu_percent"), Some(5.0));
        assert_eq!(get("port", "vm-1-nic0", "drops_per_s"), Some(0.2));
        assert_eq!(get("port", "other", "rx_bytes_per_s"), Some(0.0));
        assert_eq!(get("host", "h", "net_tx_bytes_per_s"), Some(60.0));
        assert_eq!(get("host", "h", "disk_read_bytes_per_s"), Some(100.0));
        // A daemon restart (counters back to small values) gives no rate.
        let third = points(
            &mut rates,
            t0 + Duration::from_secs(20),
            "h",
            &vms,
            &reading(0.5),
        );
        assert_eq!(find(&third, "vm", "vm-1", "net_tx_bytes_per_s"), None);
    }

    #[test]
    fn proc_files() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(host_cpu(stat), Some((150.0, 1000.0)));
        let meminfo = "MemTotal:       2048 kB\nMemFree:  1 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(host_memory_used(meminfo), Some(1024.0 * 1024.0));
        let pstat = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(process_cpu_seconds(pstat), Some(3.0));
        assert_eq!(process_cpu_seconds("garbage"), None);
    }
}
