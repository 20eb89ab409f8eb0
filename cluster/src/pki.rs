//! The cluster's own certificate authority: etcd's members and clients
//! speak TLS with each other and accept only certificates it signed
//! (`--client-cert-auth`, `--peer-client-cert-auth`). Without it, any local
//! user could connect to a member on loopback and rewrite the inventory,
//! users and roles included; across hosts it also keeps the traffic
//! private.
//!
//! `<data>/cluster-tls/` holds, each file 0600 in a 0700 directory:
//! `ca.pem` and `ca-key.pem` (the authority: every member host holds it, so
//! any of them can admit a joining host), `member.pem`/`member-key.pem`
//! (this host's etcd member, as server and as peer) and
//! `client.pem`/`client-key.pem` (this host's mgmtd).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Errors of the cluster's certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read or write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a valid subject name for a certificate")]
    BadName(String),
}

/// Where the files are.
#[derive(Debug, Clone)]
pub struct TlsDir(pub PathBuf);

impl TlsDir {
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca-key.pem")
    }
    pub fn member_cert(&self) -> PathBuf {
        self.0.join("member.pem")
    }
    pub fn member_key(&self) -> PathBuf {
        self.0.join("member-key.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.0.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.0.join("client-key.pem")
    }

    /// The client side's PEM texts, for [`crate::Store::connect`].
    pub fn client(&self) -> Result<ClientTls, PkiError> {
        Ok(ClientTls {
            ca: read(&self.ca())?,
            cert: read(&self.client_cert())?,
            key: read(&self.client_key())?,
        })
    }
}

/// What a client presents and trusts, as PEM text.
#[derive(Clone)]
pub struct ClientTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

impl ClientTls {
    pub(crate) fn options(&self) -> etcd_client::TlsOptions {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca))
            .identity(etcd_client::Identity::from_pem(&self.cert, &self.key))
    }
}

/// The cluster's authority: its key and the parameters it signs with.
pub struct Authority {
    cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority { .. }")
    }
}

/// The authority's parameters: the same for one cluster id, so that a
/// host holding the key signs under the name the certificate carries.
/// Certificates keep rcgen's default validity (1975 to 4096): the cluster
/// replaces them by re-keying, not by expiry, and a host whose clock is
/// wrong still reaches its cluster.
fn ca_params(cluster_id: &str) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Sfera cluster {cluster_id}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

impl Authority {
    /// A new authority for cluster `cluster_id`.
    pub fn create(cluster_id: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster_id)?.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key,
            params: ca_params(cluster_id)?,
        })
    }

    /// The authority stored in `dir`.
    pub fn load(dir: &TlsDir, cluster_id: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&read(&dir.ca_key())?)?;
        Ok(Authority {
            cert_pem: read(&dir.ca())?,
            key,
            params: ca_params(cluster_id)?,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a certificate for `name` valid for `sans` (IP addresses or
    /// DNS names), for servers and clients both: a member is a server to
    /// clients and both to its peers. Returns `(cert, key)` as PEM.
    pub fn issue(&self, name: &str, sans: &[String]) -> Result<(String, String), PkiError> {
        let mut p = CertificateParams::new(Vec::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        for san in sans {
            let entry = match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    san.clone()
                        .try_into()
                        .map_err(|_| PkiError::BadName(san.clone()))?,
                ),
            };
            p.subject_alt_names.push(entry);
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes the authority into `dir` (made private).
    pub fn save(&self, dir: &TlsDir) -> Result<(), PkiError> {
        make_private_dir(&dir.0)?;
        write_private(&dir.ca(), &self.cert_pem)?;
        write_private(&dir.ca_key(), &self.key.serialize_pem())
    }
}

/// Makes what a host that runs a member needs in `dir`: the authority
/// (created for `cluster_id` when there is none), the member's certificate
/// for `sans`, and mgmtd's client certificate. Files that exist are kept.
pub fn ensure_member_files(
    dir: &TlsDir,
    cluster_id: &str,
    host: &str,
    sans: &[String],
) -> Result<(), PkiError> {
    let ca = if dir.ca_key().exists() {
        Authority::load(dir, cluster_id)?
    } else {
        let ca = Authority::create(cluster_id)?;
        ca.save(dir)?;
        ca
    };
    if !dir.member_cert().exists() {
        let (cert, key) = ca.issue(host, sans)?;
        write_private(&dir.member_key(), &key)?;
        write_private(&dir.member_cert(), &cert)?;
    }
    if !dir.client_cert().exists() {
        let (cert, key) = ca.issue(&format!("mgmtd {host}"), &[])?;
        write_private(&dir.client_key(), &key)?;
        write_private(&dir.client_cert(), &cert)?;
    }
    Ok(())
}

/// What a host admitted by another gets, as PEM: the cluster's authority
/// (with its key: any host can admit the next one), its member's
/// certificate and key, and its mgmtd's client certificate and key.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFiles {
    pub ca: String,
    pub ca_key: String,
    pub member_cert: String,
    pub member_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl std::fmt::Debug for HostFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostFiles { .. }")
    }
}

impl HostFiles {
    /// Signs the files of host `host` whose member is reached at `sans`.
    pub fn issue(
        dir: &TlsDir,
        cluster_id: &str,
        host: &str,
        sans: &[String],
    ) -> Result<Self, PkiError> {
        let ca = Authority::load(dir, cluster_id)?;
        let (member_cert, member_key) = ca.issue(host, sans)?;
        let (client_cert, client_key) = ca.issue(&format!("mgmtd {host}"), &[])?;
        Ok(HostFiles {
            ca: ca.cert_pem.clone(),
            ca_key: read(&dir.ca_key())?,
            member_cert,
            member_key,
            client_cert,
            client_key,
        })
    }

    /// Writes them into `dir` (made private), replacing what is there.
    pub fn save(&self, dir: &TlsDir) -> Result<(), PkiError> {
        make_private_dir(&dir.0)?;
        for (path, text) in [
            (dir.ca(), &self.ca),
            (dir.ca_key(), &self.ca_key),
            (dir.member_cert(), &self.member_cert),
            (dir.member_key(), &self.member_key),
            (dir.client_cert(), &self.client_cert),
            (dir.client_key(), &self.client_key),
        ] {
            write_private(&path, text)?;
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn make_private_dir(dir: &Path) -> Result<(), PkiError> {
    crate::private_dir(dir).map_err(|source| PkiError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes `text` to `path` as a 0600 file, replacing one there atomically.
fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    control::files::write_atomically(path, text.as_bytes()).map_err(|e| PkiError::Io {
        path: e.path.display().to_string(),
        source: e.source,
    })
}
