//! Hosts joining the cluster (docs/cluster.md, "Joining a host").
//!
//! An administrator makes a join token on any host that runs a member:
//! `<secret>.<SHA-256 of that host's HTTPS certificate>`. The new host
//! sends the secret, its name and its member's URLs to that host's API,
//! trusting only the certificate the token names. The member host checks
//! the secret (kept hashed, under a lease: an unused token expires by
//! itself) and the name, consumes the token, signs the new host's
//! certificates with the cluster's authority, adds its member to etcd as a
//! learner (it does not count towards the quorum until it has caught up,
//! so a join that fails half-way cannot stop the cluster), and answers
//! with what the new host writes into its data directory. The new host's
//! mgmtd then starts its member as one of an existing cluster and, once
//! it serves, promotes it to a voting member.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cluster::member::free_port_on;
use cluster::pki::HostFiles;
use cluster::{Batch, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::now;
use crate::error::Error;
use crate::membership::{ClusterFile, MemberSettings, check_url, tls_dir, url_host};
use crate::service::Mgmt;

/// How long a join token lives by default, and at most.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// Body of `POST /api/v1/cluster/join-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenCreate {
    /// Seconds the token stays valid (60 to 86400; default 3600)
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub ttl_s: Option<u64>,
}

/// A join token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinToken {
    /// `<secret>.<SHA-256 of this host's HTTPS certificate>`
    pub token: String,
    /// Seconds since the epoch
    pub expires_at: i64,
}

/// `join-tokens/<hash of the secret>`, under its own lease.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    created_by: String,
    expires_at: i64,
}

/// Body of `POST /api/v1/cluster/join`: the joining host.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The join token's secret (the part before the dot)
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub secret: String,
    /// The joining host's name in the cluster
    #[schema(schema_with = crate::api::schema::object_name)]
    pub host: String,
    /// The joining host's identity (32 hex digits)
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub host_id: String,
    /// Where its etcd member will listen for its peers: `https://IP:PORT`
    pub peer_url: String,
    /// Where its etcd member will listen for clients: `https://IP:PORT`
    pub client_url: String,
}

/// What the joining host gets.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinAnswer {
    /// The cluster's id (etcd's initial cluster token)
    pub cluster_token: String,
    /// The members (name, peer URL), the new one included
    pub initial_cluster: Vec<(String, String)>,
    /// The client URLs of the voting members
    pub endpoints: Vec<String>,
    /// The cluster's authority and the new host's certificates (PEM)
    #[schema(value_type = Object)]
    pub files: HostFiles,
}

/// The parts of a join token.
pub fn parse_token(token: &str) -> Result<(&str, &str)> {
    match token.trim().split_once('.') {
        Some((secret, pin)) if is_hex(secret, 64) && is_hex(pin, 64) => Ok((secret, pin)),
        _ => bail!(
            "the join token is not <64 hex digits>.<64 hex digits> (make one with \
             `sfera host join-token` on a host of the cluster)"
        ),
    }
}

/// Whether `s` is `n` hex digits.
fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn token_key(store: &Store, secret: &str) -> String {
    store.key("join-tokens", &crate::auth::secret_hash(secret))
}

impl Mgmt {
    /// Makes a join token valid for `ttl`.
    pub async fn create_join_token(&self, user: &str, ttl: Duration) -> Result<JoinToken, Error> {
        if self.cluster.member.is_none() {
            return Err(Error::Conflict(
                "this host runs no etcd member, so it cannot admit hosts: make the token on a \
                 host that does"
                    .into(),
            ));
        }
        let Some(cert) = &self.paths.api_cert else {
            return Err(Error::Conflict(
                "this mgmtd serves plain HTTP (--http): a joining host could not check whom it \
                 talks to, so join tokens need HTTPS"
                    .into(),
            ));
        };
        let pin = crate::tls::cert_sha256(cert).map_err(|e| Error::Internal(e.to_string()))?;
        let secret = crate::auth::new_secret().map_err(|e| Error::Internal(e.to_string()))?;
        let store = &self.cluster.store;
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = store
            .client()
            .lease_grant(ttl_s, None)
            .await
            .map_err(StoreError::from)?
            .id();
        let expires_at = now() + ttl_s;
        let record = TokenRecord {
            created_by: user.to_owned(),
            expires_at,
        };
        store
            .commit(Batch::new().put(&token_key(store, &secret), &record, Some(lease))?)
            .await?;
        Ok(JoinToken {
            token: format!("{secret}.{pin}"),
            expires_at,
        })
    }

    /// Admits the host `req` describes (its token checked and used up):
    /// its certificates, and its member added to etcd as a learner.
    pub async fn admit(&self, req: &JoinRequest) -> Result<JoinAnswer, Error> {
        check_request(req)?;
        let Some(ours) = self.cluster.file.member.as_ref() else {
            return Err(Error::Conflict("this host runs no etcd member".into()));
        };
        let store = &self.cluster.store;
        let key = token_key(store, &req.secret);
        let Some(token) = store.get::<TokenRecord>(&key).await? else {
            return Err(Error::Forbidden(
                "the join token is unknown, used or expired".into(),
            ));
        };
        if let Some(held) = store
            .get::<crate::membership::HostRecord>(&store.key("hosts", &req.host))
            .await?
            && held.value.id != req.host_id
        {
            return Err(Error::NameTaken {
                kind: "host",
                name: req.host.clone(),
            });
        }
        let mut etcd = store.client();
        let members = etcd.member_list().await.map_err(StoreError::from)?;
        if let Some(m) = members
            .members()
            .iter()
            .find(|m| m.name() == req.host || m.peer_urls().contains(&req.peer_url))
        {
            return Err(Error::Conflict(format!(
                "etcd has a member {:?} at {:?} already: remove that host first \
                 (sfera host remove, or DELETE /api/v1/hosts/{{host}})",
                m.name(),
                m.peer_urls()
            )));
        }
        // Used up before anything is made: one token admits one host.
        match store.delete(&key, token.revision).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                return Err(Error::Forbidden(
                    "the join token is unknown, used or expired".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let sans = [url_host(&req.peer_url), url_host(&req.client_url)];
        let files = HostFiles::issue(
            &tls_dir(&self.paths.data_dir),
            &ours.cluster_token,
            &req.host,
            &sans,
        )
        .map_err(|e| Error::Internal(format!("cannot sign the host's certificates: {e}")))?;
        // A host of this name removed before: the new one may take it.
        store
            .commit(Batch::new().remove(&store.key("removed-hosts", &req.host)))
            .await?;
        let added = etcd
            .member_add(
                [req.peer_url.as_str()],
                Some(cluster::etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .map_err(StoreError::from)?;
        let mut initial_cluster = Vec::new();
        let mut endpoints = Vec::new();
        for m in added.member_list() {
            let name = if m.peer_urls().contains(&req.peer_url) {
                req.host.clone()
            } else {
                m.name().to_owned()
            };
            if let Some(peer) = m.peer_urls().first() {
                initial_cluster.push((name, peer.clone()));
            }
            if !m.is_learner() {
                endpoints.extend(m.client_urls().iter().cloned());
            }
        }
        tracing::info!(host = req.host, peer = req.peer_url, "Admitted a host");
        Ok(JoinAnswer {
            cluster_token: ours.cluster_token.clone(),
            initial_cluster,
            endpoints,
            files,
        })
    }
}

fn check_request(req: &JoinRequest) -> Result<(), Error> {
    if !is_hex(&req.secret, 64) {
        return Err(Error::Invalid("secret must be 64 hex digits".into()));
    }
    if !is_hex(&req.host_id, 32) {
        return Err(Error::Invalid("host_id must be 32 hex digits".into()));
    }
    if let Some(why) = control::names::problem(&req.host) {
        return Err(Error::Invalid(format!("host: {why}")));
    }
    for (field, url) in [("peer_url", &req.peer_url), ("client_url", &req.client_url)] {
        if !url.starts_with("https://") || check_url(url).is_err() {
            return Err(Error::Invalid(format!(
                "{field} must be https://IP:PORT, not {url:?}"
            )));
        }
        if url_host(url).parse::<IpAddr>().is_err() {
            return Err(Error::Invalid(format!(
                "{field} must name an IP address, not {url:?}"
            )));
        }
    }
    Ok(())
}

/// What a host needs to join: the cluster's address and a token.
#[derive(Debug, Clone)]
pub struct JoinPlan<'a> {
    /// `https://HOST:PORT` of a member host's API.
    pub url: &'a str,
    pub token: &'a str,
    /// This host's name in the cluster.
    pub host: &'a str,
    /// The address this host's member listens on (one the others reach).
    pub address: IpAddr,
}

/// Joins this host (its data in `data_dir`, mgmtd not running) to the
/// cluster: asks the member host, then writes `cluster-tls/` and
/// `cluster.json`. Refuses a host that is in a cluster already.
pub async fn join(data_dir: &Path, plan: &JoinPlan<'_>) -> Result<ClusterFile> {
    let (secret, pin) = parse_token(plan.token)?;
    if let Some(why) = control::names::problem(plan.host) {
        bail!("host name {:?}: {why}", plan.host);
    }
    let file = data_dir.join("cluster.json");
    if file.exists() {
        bail!(
            "this host is in a cluster already ({}); a host leaves its cluster before it joins \
             another",
            file.display()
        );
    }
    let etcd_dir = data_dir.join("etcd");
    if etcd_dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} holds an etcd member's data already; a host leaves its cluster before it joins \
             another",
            etcd_dir.display()
        );
    }
    let url_of = |port: u16| match plan.address {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    };
    let port = |what: &str| {
        free_port_on(plan.address)
            .with_context(|| format!("no free port for etcd's {what} on {}", plan.address))
    };
    let req = JoinRequest {
        secret: secret.to_owned(),
        host: plan.host.to_owned(),
        host_id: crate::membership::new_host_id()?,
        peer_url: url_of(port("peers")?),
        client_url: url_of(port("clients")?),
    };
    let client = crate::client::Client::pinned(plan.url, pin)?;
    let answer: JoinAnswer = serde_json::from_value(
        client
            .call_with(hyper::Method::POST, "/api/v1/cluster/join", &req)
            .await
            .with_context(|| format!("{} refused or did not answer the join", plan.url))?,
    )
    .context("the join's answer is not what this mgmtd reads")?;
    answer
        .files
        .save(&tls_dir(data_dir))
        .context("Cannot write the cluster's certificates")?;
    let joined = ClusterFile {
        host: plan.host.to_owned(),
        host_id: req.host_id,
        endpoints: answer.endpoints,
        member: Some(MemberSettings {
            client_url: req.client_url,
            peer_url: req.peer_url,
            initial_cluster: answer.initial_cluster,
            new_cluster: false,
            cluster_token: answer.cluster_token,
        }),
    };
    joined.save(data_dir)?;
    Ok(joined)
}
