//! From a routed request to its resource's handler: one line per
//! operation of [`Op`]. Each handler parses its request, checks it,
//! calls on [`Mgmt`] and answers; long operations answer 202 with their
//! task.

use std::sync::Arc;

use super::error::ApiError;
use super::reply::Reply;
use super::request::ApiRequest;
use super::routes::Op;
use super::{auth, cluster, datastores, hosts, meta, networks, roles, tasks, vms};
use crate::service::Mgmt;

/// Carries out one request.
pub async fn handle(mgmt: Arc<Mgmt>, r: ApiRequest) -> Result<Reply, ApiError> {
    let m = mgmt.as_ref();
    match r.op {
        Op::Login => auth::login(m, &r).await,
        Op::WhoAmI => auth::who_am_i(&r),
        Op::Logout => auth::logout(m, &r),
        Op::ListTokens => auth::list_tokens(m, &r).await,
        Op::CreateToken => auth::create_token(m, &r).await,
        Op::DeleteToken => auth::delete_token(m, &r).await,
        Op::ListUsers => auth::list_users(m, &r).await,
        Op::CreateUser => auth::create_user(m, &r).await,
        Op::DeleteUser => auth::delete_user(m, &r).await,
        Op::EditUser => auth::edit_user(m, &r).await,
        Op::ChangePassword => auth::change_password(m, &r).await,
        Op::ListRoles => roles::list(&r),
        Op::Host => hosts::host(m).await,
        Op::HostNics => hosts::nics(&r),
        Op::ListHosts => hosts::list_hosts(m, &r).await,
        Op::GetHost => hosts::get_host(m, &r).await,
        Op::RemoveHost => cluster::remove_host(m, &r).await,
        Op::EnterMaintenance => cluster::maintenance(m, &r, true).await,
        Op::ExitMaintenance => cluster::maintenance(m, &r, false).await,
        Op::CreateJoinToken => cluster::create_join_token(m, &r).await,
        Op::JoinCluster => cluster::join(m, &r).await,
        Op::Daemons => hosts::daemons(m, &r),
        Op::Metrics => hosts::daemon_metrics(m, &r).await,
        Op::SampledObjects => hosts::sampled_objects(m, &r),
        Op::MetricSeries => hosts::metric_series(m, &r).await,
        Op::ListDatastores => datastores::list(m, &r).await,
        Op::AddDatastore => datastores::add(m, &r).await,
        Op::GetDatastore => datastores::get(m, &r).await,
        Op::RemoveDatastore => datastores::remove(m, &r).await,
        Op::ListVolumes => datastores::list_volumes(m, &r).await,
        Op::CreateVolume => datastores::create_volume(m, &r).await,
        Op::ResizeVolume => datastores::resize_volume(m, &r).await,
        Op::DeleteVolume => datastores::delete_volume(m, &r).await,
        Op::ImportDisk => datastores::import_disk(&mgmt, &r).await,
        Op::Networks => networks::networks(m).await,
        Op::ListSwitches => networks::list_switches(m, &r).await,
        Op::AddSwitch => networks::add_switch(m, &r).await,
        Op::DeleteSwitch => networks::delete_switch(m, &r).await,
        Op::ListPortGroups => networks::list_port_groups(m, &r).await,
        Op::AddPortGroup => networks::add_port_group(m, &r).await,
        Op::EditPortGroup => networks::edit_port_group(m, &r).await,
        Op::DeletePortGroup => networks::delete_port_group(m, &r).await,
        Op::NetworkStats => networks::stats(m).await,
        Op::ListPorts => networks::list_ports(m, &r).await,
        Op::Templates => vms::templates_list(m, &r),
        Op::ListVms => vms::list(m, &r).await,
        Op::GetVm => vms::get(m, &r).await,
        Op::CreateVm => vms::create(&mgmt, &r).await,
        Op::EditVm => vms::edit(&mgmt, &r).await,
        Op::DeleteVm => vms::delete(&mgmt, &r).await,
        Op::PowerVm => vms::power(&mgmt, &r, r.param("action")).await,
        Op::ShutdownVm => vms::power(&mgmt, &r, "shutdown").await,
        Op::RebootVm => vms::power(&mgmt, &r, "reboot").await,
        Op::VmConsoleLog => vms::console_log(m, &r).await,
        Op::VmConsole | Op::VmDisplay => vms::not_upgraded(m, &r).await,
        Op::ListTasks => tasks::list(m, &r),
        Op::GetTask => tasks::get(m, &r),
        Op::ListEvents => tasks::list_events(m, &r),
        Op::Health => meta::health(),
        Op::OpenApi => meta::openapi(),
        Op::MgmtdMetrics => meta::mgmtd_metrics(m).await,
    }
}
