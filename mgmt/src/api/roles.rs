//! Roles and what each may do, derived from the route table: what a role
//! is allowed cannot disagree with what the router lets it do.

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, ok};
use super::request::ApiRequest;
use super::routes::{Access, ROUTES};
use super::schema;
use crate::auth::Role;

/// Every role, most powerful first.
const ROLES: [(Role, &str); 2] = [
    (
        Role::Administrator,
        "Manages everything: the hosts, datastores, networks, VMs and their consoles, and the users",
    ),
    (
        Role::ReadOnly,
        "Sees the inventory, tasks, events and performance; changes only their own password and API tokens",
    ),
];

/// How much of an area's operations a role may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    All,
    Some,
    None,
}

/// What a role may do in one area of the API (an OpenAPI tag).
#[derive(Debug, Serialize, ToSchema)]
pub struct Privilege {
    /// The area: the tag of its operations in the OpenAPI document
    area: &'static str,
    /// Its reads (GET)
    #[schema(inline)]
    view: Grant,
    /// Its changes (every other method)
    #[schema(inline)]
    change: Grant,
    /// The operations of the area the role may not use (operationIds)
    denied: Vec<String>,
}

/// A role.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Role)]
pub struct RoleInfo {
    #[schema(schema_with = schema::role)]
    name: Role,
    description: &'static str,
    privileges: Vec<Privilege>,
}

fn may(role: Role, access: Access) -> bool {
    access != Access::Admin || role == Role::Administrator
}

fn grant(allowed: usize, of: usize) -> Grant {
    match allowed {
        0 => Grant::None,
        n if n == of => Grant::All,
        _ => Grant::Some,
    }
}

/// What `role` may do, area by area in the order of the routes. Public
/// routes (logging in, the health check, a host's join) are no privilege.
fn privileges(role: Role) -> Vec<Privilege> {
    let mut areas: Vec<&'static str> = Vec::new();
    for r in ROUTES.iter().filter(|r| r.access != Access::Public) {
        if !areas.contains(&r.tag) {
            areas.push(r.tag);
        }
    }
    areas
        .into_iter()
        .map(|area| {
            let routes: Vec<_> = ROUTES
                .iter()
                .filter(|r| r.tag == area && r.access != Access::Public)
                .collect();
            let count = |reads: bool| {
                let of: Vec<_> = routes
                    .iter()
                    .filter(|r| (r.method == "GET") == reads)
                    .collect();
                let allowed = of.iter().filter(|r| may(role, r.access)).count();
                grant(allowed, of.len())
            };
            Privilege {
                area,
                view: count(true),
                change: count(false),
                denied: routes
                    .iter()
                    .filter(|r| !may(role, r.access))
                    .map(|r| format!("{:?}", r.op))
                    .collect(),
            }
        })
        .collect()
}

/// `GET /api/v1/roles`.
pub fn list(r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let roles = ROLES
        .iter()
        .map(|&(name, description)| RoleInfo {
            name,
            description,
            privileges: privileges(name),
        })
        .collect();
    ok(page.of(roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(role: Role, name: &str) -> Privilege {
        privileges(role)
            .into_iter()
            .find(|p| p.area == name)
            .unwrap_or_else(|| panic!("no area {name}"))
    }

    #[test]
    fn privileges_follow_the_routes() {
        let admin = privileges(Role::Administrator);
        assert!(
            admin
                .iter()
                .all(|p| p.view == Grant::All && p.change != Grant::Some && p.denied.is_empty())
        );
        let vms = area(Role::ReadOnly, "vms");
        assert_eq!((vms.view, vms.change), (Grant::Some, Grant::None));
        assert!(vms.denied.contains(&"VmConsole".to_owned()), "{vms:?}");
        // The roles, not the users.
        let users = area(Role::ReadOnly, "users");
        assert_eq!((users.view, users.change), (Grant::Some, Grant::None));
        assert!(users.denied.contains(&"ListUsers".to_owned()), "{users:?}");
        // Their own session, tokens and password.
        let own = area(Role::ReadOnly, "session");
        assert_eq!((own.view, own.change), (Grant::All, Grant::All));
        // A host's join is public, not a privilege of anyone.
        assert!(
            !area(Role::ReadOnly, "cluster")
                .denied
                .contains(&"JoinCluster".to_owned())
        );
    }
}
