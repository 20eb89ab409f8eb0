//! Inventory rows: the host, datastores and networks mirrored from the
//! daemons, and the VMs of a host from before the cluster (they move into
//! the cluster's store, [`crate::inventory`], at the first start; these
//! rows are read only for that).

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::{Db, DbError, now};

/// How a VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Boot {
    /// Linux direct boot: a kernel, an optional initramfs, a command line.
    Kernel {
        /// An existing file on the host
        #[schema(pattern = "^/")]
        kernel: String,
        /// An existing file on the host, or null for none
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(pattern = "^/")]
        initrd: Option<String>,
        #[serde(default)]
        #[schema(max_length = 2048, pattern = "^[^\\n]*$")]
        cmdline: String,
    },
    /// Through firmware, from the boot loader on the VM's first disk (an
    /// imported image, say): QEMU only.
    Disk,
    /// Through firmware, from an ISO image on the host (an installer) as
    /// a CD-ROM: QEMU only.
    Iso {
        /// A regular file inside an import directory or a datastore root,
        /// checked after symlinks are resolved (else 400 path_not_allowed)
        #[schema(pattern = "^/")]
        iso: String,
    },
}

/// Power state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Being created: its disks and NICs are being made.
    Creating,
    Stopped,
    Running,
    /// Running, its vCPUs stopped (memory and devices kept).
    Paused,
    /// Being deleted.
    Deleting,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> VmState {
        match s {
            "creating" => VmState::Creating,
            "running" => VmState::Running,
            "paused" => VmState::Paused,
            "deleting" => VmState::Deleting,
            _ => VmState::Stopped,
        }
    }
}

/// A VM disk: a volume on a datastore, served by an export of sfera-blockd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmDisk {
    pub datastore: String,
    pub volume: String,
    pub size_bytes: u64,
    pub export_id: String,
}

/// A VM NIC: a port of sfera-vswitchd in a port group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmNic {
    pub port_group: String,
    pub mac: String,
    pub port: String,
}

/// A VM as the inventory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = VmRecord)]
pub struct Vm {
    pub id: String,
    pub name: String,
    /// The host whose mgmtd runs the VM
    pub host: String,
    /// The revision of the VM's settings in the cluster's store: an edit
    /// that names it is refused (409) once someone else changed them
    pub resource_version: i64,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub boot: Boot,
    /// `sfera-vmm` or `qemu`.
    #[schema(schema_with = crate::api::schema::driver)]
    pub driver: String,
    /// Why the VM got its driver.
    pub driver_reason: String,
    pub state: VmState,
    /// The hypervisor process while the VM runs.
    pub pid: Option<u32>,
    pub disks: Vec<VmDisk>,
    pub nics: Vec<VmNic>,
    /// Seconds since the epoch
    pub created_at: i64,
    /// Seconds since the epoch
    pub updated_at: i64,
}

/// A datastore as last seen on sfera-blockd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DatastoreRow {
    pub name: String,
    pub path: String,
    pub capacity_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub volumes: Option<u64>,
    /// When sfera-blockd last reported it (seconds since the epoch)
    pub updated_at: i64,
}

fn vm_from_row(r: &Row<'_>) -> rusqlite::Result<(Vm, String)> {
    let boot: String = r.get("boot")?;
    let state: String = r.get("state")?;
    Ok((
        Vm {
            id: r.get("id")?,
            name: r.get("name")?,
            host: String::new(),
            resource_version: 0,
            vcpus: r.get("vcpus")?,
            memory_mib: r.get("memory_mib")?,
            boot: Boot::Kernel {
                kernel: String::new(),
                initrd: None,
                cmdline: String::new(),
            },
            driver: r.get("driver")?,
            driver_reason: r.get("driver_reason")?,
            state: VmState::parse(&state),
            pid: r.get("pid")?,
            disks: Vec::new(),
            nics: Vec::new(),
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        },
        boot,
    ))
}

/// Records a VM's disk and NIC rows, in their order.
fn insert_devices(tx: &rusqlite::Transaction<'_>, vm: &Vm) -> rusqlite::Result<()> {
    for (i, d) in vm.disks.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_disks (vm_id, idx, datastore, volume, size_bytes, export_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![vm.id, i, d.datastore, d.volume, d.size_bytes, d.export_id],
        )?;
    }
    for (i, n) in vm.nics.iter().enumerate() {
        tx.execute(
            "INSERT INTO vm_nics (vm_id, idx, port_group, mac, port) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![vm.id, i, n.port_group, n.mac, n.port],
        )?;
    }
    Ok(())
}

impl Db {
    /// Records the host's facts.
    pub fn set_host(&self, facts: &serde_json::Value) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO host (id, facts, updated_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET facts = excluded.facts, updated_at = excluded.updated_at",
            params![facts.to_string(), now()],
        )?;
        Ok(())
    }

    /// The host's facts as last recorded.
    pub fn host(&self) -> Result<Option<serde_json::Value>, DbError> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT facts FROM host WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }

    /// Replaces the datastore mirror with what sfera-blockd reports.
    pub fn replace_datastores(&self, rows: &[DatastoreRow]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM datastores", [])?;
        for d in rows {
            tx.execute(
                "INSERT INTO datastores (name, path, capacity_bytes, free_bytes, volumes, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![d.name, d.path, d.capacity_bytes, d.free_bytes, d.volumes, d.updated_at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The datastores as last seen.
    pub fn datastores(&self) -> Result<Vec<DatastoreRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, path, capacity_bytes, free_bytes, volumes, updated_at
             FROM datastores ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DatastoreRow {
                name: r.get(0)?,
                path: r.get(1)?,
                capacity_bytes: r.get(2)?,
                free_bytes: r.get(3)?,
                volumes: r.get(4)?,
                updated_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the network mirror (switches and port groups, as the
    /// switch's JSON) with what sfera-vswitchd reports.
    pub fn replace_networks(
        &self,
        switches: &[serde_json::Value],
        port_groups: &[serde_json::Value],
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = now();
        tx.execute("DELETE FROM switches", [])?;
        tx.execute("DELETE FROM port_groups", [])?;
        for s in switches {
            tx.execute(
                "INSERT INTO switches (name, config, updated_at) VALUES (?1, ?2, ?3)",
                params![s["name"].as_str().unwrap_or_default(), s.to_string(), t],
            )?;
        }
        for g in port_groups {
            tx.execute(
                "INSERT INTO port_groups (name, switch, config, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    g["name"].as_str().unwrap_or_default(),
                    g["switch"].as_str().unwrap_or_default(),
                    g.to_string(),
                    t
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Switches and port groups as last seen.
    pub fn networks(&self) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), DbError> {
        let conn = self.conn();
        let read = |sql: &str| -> Result<Vec<serde_json::Value>, DbError> {
            let mut stmt = conn.prepare(sql)?;
            let texts = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(texts
                .iter()
                .map(|t| serde_json::from_str(t))
                .collect::<Result<_, _>>()?)
        };
        Ok((
            read("SELECT config FROM switches ORDER BY name")?,
            read("SELECT config FROM port_groups ORDER BY name")?,
        ))
    }

    /// Records a new VM (in state `creating`). Fails with a constraint
    /// error when the name is taken.
    pub fn insert_vm(&self, vm: &Vm) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO vms (id, name, vcpus, memory_mib, boot, driver, state, pid, created_at, updated_at, driver_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![
                vm.id,
                vm.name,
                vm.vcpus,
                vm.memory_mib,
                serde_json::to_string(&vm.boot)?,
                vm.driver,
                vm.state.as_str(),
                vm.pid,
                vm.created_at,
                vm.driver_reason
            ],
        )?;
        insert_devices(&tx, vm)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a VM with its disk and NIC rows.
    pub fn delete_vm(&self, id: &str) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM vms WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// A VM by id or by name.
    pub fn vm(&self, id_or_name: &str) -> Result<Option<Vm>, DbError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT * FROM vms WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
                params![id_or_name],
                vm_from_row,
            )
            .optional()?;
        drop(conn);
        found.map(|(vm, boot)| self.complete(vm, &boot)).transpose()
    }

    /// Every VM, by name.
    pub fn vms(&self) -> Result<Vec<Vm>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM vms ORDER BY name")?;
        let rows = stmt
            .query_map([], vm_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter()
            .map(|(vm, boot)| self.complete(vm, &boot))
            .collect()
    }

    fn complete(&self, mut vm: Vm, boot: &str) -> Result<Vm, DbError> {
        vm.boot = serde_json::from_str(boot)?;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT datastore, volume, size_bytes, export_id FROM vm_disks WHERE vm_id = ?1 ORDER BY idx",
        )?;
        vm.disks = stmt
            .query_map(params![vm.id], |r| {
                Ok(VmDisk {
                    datastore: r.get(0)?,
                    volume: r.get(1)?,
                    size_bytes: r.get(2)?,
                    export_id: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn
            .prepare("SELECT port_group, mac, port FROM vm_nics WHERE vm_id = ?1 ORDER BY idx")?;
        vm.nics = stmt
            .query_map(params![vm.id], |r| {
                Ok(VmNic {
                    port_group: r.get(0)?,
                    mac: r.get(1)?,
                    port: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: &str, name: &str) -> Vm {
        Vm {
            id: id.into(),
            name: name.into(),
            host: String::new(),
            resource_version: 0,
            vcpus: 1,
            memory_mib: 512,
            boot: Boot::Kernel {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                cmdline: "console=ttyS0".into(),
            },
            driver: "qemu".into(),
            driver_reason: String::new(),
            state: VmState::Creating,
            pid: None,
            disks: vec![VmDisk {
                datastore: "local".into(),
                volume: format!("{name}/disk0"),
                size_bytes: 1 << 30,
                export_id: format!("{id}-disk0"),
            }],
            nics: vec![VmNic {
                port_group: "vm-network".into(),
                mac: "52:54:00:00:00:01".into(),
                port: format!("{id}-nic0"),
            }],
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn vms_round_trip_and_names_are_unique() {
        let db = Db::in_memory().unwrap();
        let vm = sample("vm-1", "web");
        db.insert_vm(&vm).unwrap();
        assert_eq!(db.vm("vm-1").unwrap().unwrap(), vm);
        assert_eq!(db.vm("web").unwrap().unwrap().id, "vm-1");
        assert!(db.insert_vm(&sample("vm-2", "web")).is_err());
        db.insert_vm(&sample("vm-3", "other")).unwrap();
        let names: Vec<String> = db.vms().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["other", "web"]);
        db.delete_vm("vm-1").unwrap();
        db.delete_vm("vm-3").unwrap();
        assert!(db.vm("vm-1").unwrap().is_none());
        let orphans: i64 = db
            .conn()
            .query_row("SELECT COUNT(*) FROM vm_disks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(orphans, 0);
    }
}
