//! Hosts joining the cluster (join tokens, and the join itself) and
//! leaving it.

use std::time::Duration;

use super::error::ApiError;
use super::reply::{Reply, created, ok};
use super::request::ApiRequest;
use crate::join::{JoinRequest, JoinTokenCreate, TOKEN_TTL, TOKEN_TTL_MAX};
use crate::service::Mgmt;

/// `POST /api/v1/cluster/join-tokens`: shown once, hashed in the store.
pub async fn create_join_token(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: JoinTokenCreate = r.body()?;
    let ttl = match body.ttl_s {
        None => TOKEN_TTL,
        Some(s) if (60..=TOKEN_TTL_MAX.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "ttl_s must be 60 to {} seconds",
                TOKEN_TTL_MAX.as_secs()
            )));
        }
    };
    let user = r.user()?;
    let token = mgmt.create_join_token(&user, ttl).await?;
    mgmt.db.event(
        "info",
        "cluster.join_token_created",
        &mgmt.cluster.host,
        &format!("A join token was made, valid until {}", token.expires_at),
        Some(&user),
    );
    created(token)
}

/// `POST /api/v1/cluster/join`: the token's secret is the credential. A
/// refusal of a caller that had a valid token is an event.
pub async fn join(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let req: JoinRequest = r.body()?;
    match mgmt.admit(&req).await {
        Ok(answer) => {
            mgmt.db.event(
                "info",
                "cluster.host_admitted",
                &req.host,
                &format!(
                    "Host {} admitted to the cluster (etcd member at {})",
                    req.host, req.peer_url
                ),
                None,
            );
            ok(answer)
        }
        // Anyone can send a secret: a wrong one is answered, not recorded,
        // so that guessing cannot fill the event log.
        Err(e @ (crate::error::Error::Forbidden(_) | crate::error::Error::Invalid(_))) => {
            Err(e.into())
        }
        Err(e) => {
            mgmt.db.event(
                "warning",
                "cluster.join_refused",
                &req.host,
                &format!("Host {} was refused: {e}", req.host),
                None,
            );
            Err(e.into())
        }
    }
}

/// `DELETE /api/v1/hosts/{host}`: see `crate::leave`.
pub async fn remove_host(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let host = r.param("host");
    super::rules::check_object_name("host", host)?;
    let user = r.user()?;
    let removed = mgmt.remove_host(host, &user).await?;
    mgmt.db.event(
        "info",
        "cluster.host_removed",
        host,
        &format!(
            "Host {host} removed from the cluster{}{}",
            if removed.records {
                ""
            } else {
                " (its records were gone already)"
            },
            if removed.member {
                ""
            } else {
                "; it had no etcd member"
            }
        ),
        Some(&user),
    );
    Ok(Reply::Empty)
}

/// `PUT` (`enter`) and `DELETE /api/v1/hosts/{host}/maintenance`: the
/// host as listed after the change.
pub async fn maintenance(mgmt: &Mgmt, r: &ApiRequest, enter: bool) -> Result<Reply, ApiError> {
    let host = r.param("host");
    super::rules::check_object_name("host", host)?;
    let user = r.user()?;
    let (changed, kind, text) = if enter {
        let (entered, _) = mgmt.enter_maintenance(host, &user).await?;
        (
            entered,
            "host.maintenance_entered",
            "entered maintenance mode",
        )
    } else {
        let left = mgmt.exit_maintenance(host).await?;
        (left, "host.maintenance_exited", "exited maintenance mode")
    };
    if changed {
        mgmt.db.event(
            "info",
            kind,
            host,
            &format!("Host {host} {text}"),
            Some(&user),
        );
    }
    super::hosts::get_host(mgmt, r).await
}
