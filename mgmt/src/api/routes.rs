//! Every route of `/api/v1` (and mgmtd's own `/metrics`), in one table: the router dispatches from it and
//! the OpenAPI document is generated from it, so the two cannot disagree.

use std::collections::BTreeMap;

use super::error::ApiError;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (logging in, the health check).
    Public,
    /// Any authenticated user, read-only included.
    Read,
    /// Any authenticated user, on their own session or tokens.
    Own,
    /// Administrators only.
    Admin,
}

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Login,
    Health,
    WhoAmI,
    Logout,
    ListTokens,
    CreateToken,
    DeleteToken,
    ListUsers,
    CreateUser,
    DeleteUser,
    EditUser,
    ChangePassword,
    ListRoles,
    Host,
    HostNics,
    ListHosts,
    GetHost,
    RemoveHost,
    EnterMaintenance,
    ExitMaintenance,
    CreateJoinToken,
    JoinCluster,
    Daemons,
    ListDatastores,
    AddDatastore,
    GetDatastore,
    ListVolumes,
    ImportDisk,
    RemoveDatastore,
    CreateVolume,
    ResizeVolume,
    DeleteVolume,
    Networks,
    ListSwitches,
    ListPortGroups,
    AddPortGroup,
    AddSwitch,
    DeleteSwitch,
    EditPortGroup,
    DeletePortGroup,
    NetworkStats,
    ListPorts,
    Templates,
    ListVms,
    CreateVm,
    GetVm,
    DeleteVm,
    EditVm,
    PowerVm,
    ShutdownVm,
    RebootVm,
    VmConsole,
    VmDisplay,
    VmConsoleLog,
    ListTasks,
    GetTask,
    ListEvents,
    Metrics,
    SampledObjects,
    MetricSeries,
    OpenApi,
    MgmtdMetrics,
}

/// A query parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    pub name: &'static str,
    /// Its JSON Schema, as JSON text.
    pub schema: &'static str,
    pub description: &'static str,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// `/api/v1/...` with `{param}` segments.
    pub path: &'static str,
    pub op: Op,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Schema of the JSON body, if it takes one.
    pub body: Option<&'static str>,
    /// Status of a success.
    pub status: u16,
    /// Schema of a success's body (`None`: empty; `"text"`: plain text).
    pub response: Option<&'static str>,
    pub query: &'static [QueryParam],
}

const PAGE: &[QueryParam] = &[
    QueryParam {
        name: "limit",
        schema: r#"{"type":"integer","minimum":1,"maximum":500}"#,
        description: "Items per page, 1 to 500 (default 100)",
    },
    QueryParam {
        name: "offset",
        schema: r#"{"type":"integer","minimum":0,"maximum":4294967295}"#,
        description: "Items to skip (default 0)",
    },
];

const SERIES: &[QueryParam] = &[
    QueryParam {
        name: "resolution",
        schema: r#"{"type":"string","enum":["raw","5m"]}"#,
        description: "raw (the samples of the last hour, default) or 5m (the 5-minute rollups of the last day)",
    },
    QueryParam {
        name: "since",
        schema: r#"{"type":"integer","minimum":-9223372036854775808,"maximum":9223372036854775807}"#,
        description: "Only points from this time on (seconds since the epoch; default: all that is kept)",
    },
];

const DELETE_VM: &[QueryParam] = &[QueryParam {
    name: "disks",
    schema: r#"{"type":"boolean"}"#,
    description: "Delete the VM's volumes too (default false: they stay on their datastores)",
}];

const GUEST_STOP: &[QueryParam] = &[QueryParam {
    name: "timeout_s",
    schema: r#"{"type":"integer","minimum":1,"maximum":3600}"#,
    description: "How long the guest has to stop, in seconds, 1 to 3600 (default 120); when it is up the task fails and the VM runs on",
}];

macro_rules! route {
    (@query) => { &[] };
    (@query $q:expr) => { $q };
    ($method:literal $path:literal => $op:ident, $access:ident, $tag:literal, $summary:literal,
     body: $body:expr, $status:literal => $response:expr $(, query: $query:expr)?) => {
        Route {
            method: $method,
            path: $path,
            op: Op::$op,
            access: Access::$access,
            tag: $tag,
            summary: $summary,
            body: $body,
            status: $status,
            response: $response,
            query: route!(@query $($query)?),
        }
    };
}

/// The API.
pub const ROUTES: &[Route] = &[
    route!("POST" "/api/v1/session" => Login, Public, "session", "Log in: sets the session cookie",
        body: Some("Login"), 200 => Some("Session")),
    route!("GET" "/api/v1/health" => Health, Public, "meta", "Health check for monitors and installers: 200 while mgmtd serves the API (no credentials needed, tells nothing about the inventory)",
        body: None, 200 => Some("Health")),
    route!("GET" "/api/v1/session" => WhoAmI, Read, "session", "Who the caller is",
        body: None, 200 => Some("Session")),
    route!("DELETE" "/api/v1/session" => Logout, Own, "session", "Log out: ends the cookie's session",
        body: None, 204 => None),
    route!("POST" "/api/v1/session/password" => ChangePassword, Own, "session", "Change the caller's own password, giving the current one (403 when it is wrong; wrong ones count as failed logins)",
        body: Some("PasswordChange"), 204 => None),
    route!("GET" "/api/v1/tokens" => ListTokens, Read, "session", "The caller's API tokens",
        body: None, 200 => Some("TokenPage"), query: PAGE),
    route!("POST" "/api/v1/tokens" => CreateToken, Own, "session", "Create an API token for the caller (its secret is shown once)",
        body: Some("TokenCreate"), 201 => Some("NewToken")),
    route!("DELETE" "/api/v1/tokens/{id}" => DeleteToken, Own, "session", "Revoke one of the caller's tokens",
        body: None, 204 => None),
    route!("GET" "/api/v1/users" => ListUsers, Admin, "users", "Users",
        body: None, 200 => Some("UserPage"), query: PAGE),
    route!("POST" "/api/v1/users" => CreateUser, Admin, "users", "Create a user",
        body: Some("UserCreate"), 201 => Some("User")),
    route!("PATCH" "/api/v1/users/{name}" => EditUser, Admin, "users", "Change another user's role or reset their password (what is left out stays; a reset ends their sessions on this host); 409 for the caller's own account, so that an administrator always remains",
        body: Some("UserEdit"), 200 => Some("User")),
    route!("DELETE" "/api/v1/users/{name}" => DeleteUser, Admin, "users", "Delete a user with their sessions and tokens",
        body: None, 204 => None),
    route!("GET" "/api/v1/roles" => ListRoles, Read, "users", "Roles and what each may view and change in each area of the API (derived from the routes' access)",
        body: None, 200 => Some("RolePage"), query: PAGE),
    route!("GET" "/api/v1/host" => Host, Read, "host", "The host: CPUs, memory, KVM kind, hypervisor driver and why",
        body: None, 200 => Some("Host")),
    route!("GET" "/api/v1/host/nics" => HostNics, Read, "host", "The host's network interfaces (loopback left out, physical ones first): what a switch's af_packet uplink is picked from",
        body: None, 200 => Some("NicPage"), query: PAGE),
    route!("GET" "/api/v1/hosts" => ListHosts, Read, "cluster", "The cluster's hosts, each connected (its lease held) or not responding; 503 while the cluster's store has no quorum",
        body: None, 200 => Some("ClusterHostPage"), query: PAGE),
    route!("GET" "/api/v1/hosts/{host}" => GetHost, Read, "cluster", "One host of the cluster",
        body: None, 200 => Some("ClusterHost")),
    route!("DELETE" "/api/v1/hosts/{host}" => RemoveHost, Admin, "cluster", "Remove a host from the cluster (its records, its lease and its etcd member), through another host; 409 while it has VMs or when it is the host answering",
        body: None, 204 => None),
    route!("PUT" "/api/v1/hosts/{host}/maintenance" => EnterMaintenance, Admin, "cluster", "Put a host in maintenance mode: no VM of it powers on and no new VM is made on it; 409 while one of its VMs runs or is paused; a host in it already stays as it is",
        body: None, 200 => Some("ClusterHost")),
    route!("DELETE" "/api/v1/hosts/{host}/maintenance" => ExitMaintenance, Admin, "cluster", "Take a host out of maintenance mode (one not in it stays as it is)",
        body: None, 200 => Some("ClusterHost")),
    route!("POST" "/api/v1/cluster/join-tokens" => CreateJoinToken, Admin, "cluster", "Make a join token for a new host: shown once, it expires (default an hour) and admits one host; 409 on a host that serves plain HTTP or runs no etcd member",
        body: Some("JoinTokenCreate"), 201 => Some("JoinToken")),
    route!("POST" "/api/v1/cluster/join" => JoinCluster, Public, "cluster", "A new host joins with a join token's secret (sfera-mgmtd --join does this): the answer holds its certificates, signed by the cluster's authority, and the members; 403 for a token unknown, used or expired",
        body: Some("JoinRequest"), 200 => Some("JoinAnswer")),
    route!("GET" "/api/v1/daemons" => Daemons, Read, "host", "The supervised daemons",
        body: None, 200 => Some("DaemonPage"), query: PAGE),
    route!("GET" "/api/v1/datastores" => ListDatastores, Read, "datastores", "Datastores (from sfera-blockd; the inventory's copy, marked stale, when it is down)",
        body: None, 200 => Some("DatastorePage"), query: PAGE),
    route!("POST" "/api/v1/datastores" => AddDatastore, Admin, "datastores", "Register a directory or block device as a datastore",
        body: Some("DatastoreCreate"), 201 => Some("Datastore")),
    route!("GET" "/api/v1/datastores/{datastore}" => GetDatastore, Read, "datastores", "One datastore",
        body: None, 200 => Some("Datastore")),
    route!("DELETE" "/api/v1/datastores/{datastore}" => RemoveDatastore, Admin, "datastores", "Unregister a datastore (its files stay on the host); refused (409) while disks of VMs are on it",
        body: None, 204 => None),
    route!("POST" "/api/v1/datastores/{datastore}/volumes" => CreateVolume, Admin, "datastores", "Create a thin volume",
        body: Some("VolumeCreate"), 201 => Some("Volume")),
    route!("PATCH" "/api/v1/datastores/{datastore}/volumes/{volume}" => ResizeVolume, Admin, "datastores", "Grow a volume (volume: NAME or FOLDER%2FNAME); a disk of a VM only while the VM is stopped",
        body: Some("VolumeResize"), 200 => Some("Volume")),
    route!("DELETE" "/api/v1/datastores/{datastore}/volumes/{volume}" => DeleteVolume, Admin, "datastores", "Delete a volume (volume: NAME or FOLDER%2FNAME); refused (409) while it is a disk of a VM",
        body: None, 204 => None),
    route!("GET" "/api/v1/datastores/{datastore}/volumes" => ListVolumes, Read, "datastores", "Volumes of a datastore",
        body: None, 200 => Some("VolumePage"), query: PAGE),
    route!("POST" "/api/v1/datastores/{datastore}/import" => ImportDisk, Admin, "datastores", "Import a raw, qcow2 or vmdk image file of an import directory (one that names no other file) as a new volume (a task, through qemu-img convert; a failed import leaves no volume)",
        body: Some("DiskImport"), 202 => Some("Task")),
    route!("GET" "/api/v1/networks" => Networks, Read, "networks", "Switches and port groups together",
        body: None, 200 => Some("Networks")),
    route!("GET" "/api/v1/switches" => ListSwitches, Read, "networks", "Virtual switches with their uplinks",
        body: None, 200 => Some("SwitchPage"), query: PAGE),
    route!("POST" "/api/v1/switches" => AddSwitch, Admin, "networks", "Create a virtual switch with its uplinks: TAP devices it creates, or existing host NICs through AF_PACKET",
        body: Some("SwitchCreate"), 201 => Some("Switch")),
    route!("DELETE" "/api/v1/switches/{switch}" => DeleteSwitch, Admin, "networks", "Delete a switch; refused (409) while it has port groups",
        body: None, 204 => None),
    route!("GET" "/api/v1/port-groups" => ListPortGroups, Read, "networks", "Port groups",
        body: None, 200 => Some("PortGroupPage"), query: PAGE),
    route!("POST" "/api/v1/port-groups" => AddPortGroup, Admin, "networks", "Create a port group",
        body: Some("PortGroupCreate"), 201 => Some("PortGroup")),
    route!("PATCH" "/api/v1/port-groups/{port_group}" => EditPortGroup, Admin, "networks", "Change a port group's VLAN, security policy, traffic shaping or teaming (what is left out stays)",
        body: Some("PortGroupEdit"), 200 => Some("PortGroup")),
    route!("DELETE" "/api/v1/port-groups/{port_group}" => DeletePortGroup, Admin, "networks", "Delete a port group; refused (409) while NICs of VMs are on it",
        body: None, 204 => None),
    route!("GET" "/api/v1/networks/stats" => NetworkStats, Read, "networks", "Counters of ports and uplinks (from sfera-vswitchd)",
        body: None, 200 => Some("Object")),
    route!("GET" "/api/v1/ports" => ListPorts, Read, "networks", "VM ports on the switch: port group, MAC, VM, connected, counters",
        body: None, 200 => Some("PortPage"), query: PAGE),
    route!("GET" "/api/v1/templates" => Templates, Read, "vms", "VM templates",
        body: None, 200 => Some("TemplatePage"), query: PAGE),
    route!("GET" "/api/v1/vms" => ListVms, Read, "vms", "VMs",
        body: None, 200 => Some("VmPage"), query: PAGE),
    route!("POST" "/api/v1/vms" => CreateVm, Admin, "vms", "Create a VM (a task: disks and NICs are made on the daemons)",
        body: Some("VmCreate"), 202 => Some("Task")),
    route!("GET" "/api/v1/vms/{vm}" => GetVm, Read, "vms", "One VM, by id or name",
        body: None, 200 => Some("Vm")),
    route!("DELETE" "/api/v1/vms/{vm}" => DeleteVm, Admin, "vms", "Delete a stopped VM (a task)",
        body: None, 202 => Some("Task"), query: DELETE_VM),
    route!("PATCH" "/api/v1/vms/{vm}" => EditVm, Admin, "vms", "Edit a VM (a task): rename it at any time; change vCPUs, memory, boot source, driver, disks and NICs while it is stopped. A failed edit changes nothing",
        body: Some("VmEdit"), 202 => Some("Task")),
    // Before power/{action}, which would take their paths otherwise.
    route!("POST" "/api/v1/vms/{vm}/power/shutdown" => ShutdownVm, Admin, "vms", "Shut down a running VM's guest (a task): press its ACPI power button and wait up to timeout_s for the guest to power off. When the time is up the task fails and the VM runs on (power it off to stop it at once). QEMU VMs only: sfera-vmm has no ACPI power button (409)",
        body: None, 202 => Some("Task"), query: GUEST_STOP),
    route!("POST" "/api/v1/vms/{vm}/power/reboot" => RebootVm, Admin, "vms", "Restart a running VM's guest gracefully (a task): shut it down as power/shutdown does, then power the VM on again once it is off. When the guest does not stop within timeout_s the task fails and the VM runs on. QEMU VMs only (409 for sfera-vmm)",
        body: None, 202 => Some("Task"), query: GUEST_STOP),
    route!("POST" "/api/v1/vms/{vm}/power/{action}" => PowerVm, Admin, "vms", "Power on, off (the power cord), reset, pause or resume a VM (a task); action is on, off, reset, pause or resume. Any host of the cluster takes it: the VM's host carries it out and the task reports what came of it there; 409 at once when the VM's host is not responding",
        body: None, 202 => Some("Task")),
    route!("GET" "/api/v1/vms/{vm}/console" => VmConsole, Admin, "vms", "The VM's serial console as a WebSocket (binary frames both ways: what the guest prints, what you type). The first frame is text, a ConsoleEvent of type session (JSON): the power-on this console shows, where a terminal starts clean. The next is the history, the last 64 KiB printed since this power-on (empty when there is none) with its terminal queries taken out: a terminal must not send its answers to queries in it to the guest",
        body: None, 101 => None),
    route!("GET" "/api/v1/vms/{vm}/console-logs/{session}" => VmConsoleLog, Admin, "vms", "Everything the serial console printed, as a file: session current (since the last power-on) or previous (the power-on before it)",
        body: None, 200 => Some("file")),
    route!("GET" "/api/v1/vms/{vm}/display" => VmDisplay, Admin, "vms", "The VM's screen, keyboard and mouse as a WebSocket carrying VNC (RFB) in binary frames both ways, for a client such as noVNC; QEMU VMs only (409 for sfera-vmm's, which have no framebuffer)",
        body: None, 101 => None),
    route!("GET" "/api/v1/tasks" => ListTasks, Read, "tasks", "Tasks, newest first",
        body: None, 200 => Some("TaskPage"), query: PAGE),
    route!("GET" "/api/v1/tasks/{id}" => GetTask, Read, "tasks", "One task",
        body: None, 200 => Some("Task")),
    route!("GET" "/api/v1/events" => ListEvents, Read, "events", "Events, newest first",
        body: None, 200 => Some("EventPage"), query: PAGE),
    route!("GET" "/api/v1/metrics/{daemon}" => Metrics, Read, "host", "A daemon's Prometheus metrics (daemon: blockd or vswitchd)",
        body: None, 200 => Some("text")),
    route!("GET" "/api/v1/metrics" => SampledObjects, Read, "metrics", "Objects with performance samples (kind host, vm, volume or port) and their metrics; the sampling interval and retention",
        body: None, 200 => Some("SampledObjectPage"), query: PAGE),
    route!("GET" "/api/v1/metrics/{kind}/{object}" => MetricSeries, Read, "metrics", "Performance series of one object: kind host (object: the host name), vm (id or name), volume (datastore/volume) or port (its name)",
        body: None, 200 => Some("MetricSeries"), query: SERIES),
    route!("GET" "/api/v1/openapi.json" => OpenApi, Read, "meta", "This document",
        body: None, 200 => Some("Object")),
    route!("GET" "/metrics" => MgmtdMetrics, Read, "meta", "sfera-mgmtd's own Prometheus metrics: API requests by route and status, tasks, VMs by state, daemon restarts, sampler timings",
        body: None, 200 => Some("text")),
];

/// Path parameters of a matched route.
pub type Params = BTreeMap<&'static str, String>;

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/')
}

/// Finds the route of `method` on `path` (path segments already decoded).
/// 404 when no route has the path, 405 when none has it with this method.
pub fn find(method: &str, path: &[String]) -> Result<(&'static Route, Params), ApiError> {
    let mut allowed: Vec<&str> = Vec::new();
    for r in ROUTES {
        let Some(params) = match_path(r, path) else {
            continue;
        };
        if r.method == method {
            return Ok((r, params));
        }
        allowed.push(r.method);
    }
    let shown = format!("/{}", path.join("/"));
    if !allowed.is_empty() {
        Err(ApiError::method_not_allowed(
            format!("{method} is not allowed on {shown}"),
            &allowed,
        ))
    } else {
        Err(ApiError::not_found(format!("No such resource: {shown}")))
    }
}

/// The parameters of `path` if it is `route`'s path.
fn match_path(route: &Route, path: &[String]) -> Option<Params> {
    let template: Vec<&'static str> = segments(route.path).collect();
    if template.len() != path.len() {
        return None;
    }
    let mut params = Params::new();
    let matched = template.iter().zip(path).all(|(t, s)| {
        match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(name) if !s.is_empty() => {
                params.insert(name, s.clone());
                true
            }
            Some(_) => false,
            None => t == s,
        }
    });
    matched.then_some(params)
}

/// Whether `path` is the path of a public route (one anyone may call), so
/// what it allows is no secret.
pub fn is_public_path(path: &[String]) -> bool {
    ROUTES
        .iter()
        .any(|r| r.access == Access::Public && match_path(r, path).is_some())
}

pub use control::path::percent_decode;

#[cfg(test)]
mod tests {
    use super::*;

    fn split(path: &str) -> Vec<String> {
        segments(path).map(str::to_owned).collect()
    }

    #[test]
    fn every_route_is_reached_by_its_own_path() {
        for r in ROUTES {
            let concrete = r
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "x1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let (found, params) = find(r.method, &split(&concrete)).unwrap();
            assert_eq!(found.op, r.op, "{} {} is shadowed", r.method, r.path);
            assert_eq!(params.len(), r.path.matches('{').count());
        }
    }

    #[test]
    fn routes_are_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
                assert_ne!(a.op, b.op, "{:?} twice", a.op);
            }
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(find("GET", &split("/api/v1/nope")).unwrap_err().status, 404);
        let e = find("PUT", &split("/api/v1/vms")).unwrap_err();
        assert_eq!((e.status, e.allow.as_deref()), (405, Some("GET, POST")));
        let (r, p) = find("POST", &split("/api/v1/vms/web/power/on")).unwrap();
        assert_eq!(r.op, Op::PowerVm);
        assert_eq!((p["vm"].as_str(), p["action"].as_str()), ("web", "on"));
        // shutdown and reboot have their own routes, before power/{action}.
        let (r, p) = find("POST", &split("/api/v1/vms/web/power/shutdown")).unwrap();
        assert_eq!((r.op, p["vm"].as_str()), (Op::ShutdownVm, "web"));
        let (r, _) = find("POST", &split("/api/v1/vms/web/power/reboot")).unwrap();
        assert_eq!(r.op, Op::RebootVm);
        assert_eq!(
            find("GET", &split("/api/v1/vms/")).unwrap().0.op,
            Op::ListVms
        );
    }

    #[test]
    fn only_public_paths_are_public() {
        assert!(is_public_path(&split("/api/v1/health")));
        assert!(is_public_path(&split("/api/v1/session")));
        assert!(!is_public_path(&split("/api/v1/vms")));
        assert!(!is_public_path(&split("/api/v1/nope")));
    }

    #[test]
    fn writes_need_more_than_read() {
        for r in ROUTES {
            if r.method != "GET" {
                assert_ne!(r.access, Access::Read, "{} {}", r.method, r.path);
            }
        }
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert!(percent_decode("a%zz").is_err());
    }
}
