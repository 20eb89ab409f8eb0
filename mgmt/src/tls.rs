//! The HTTPS certificate: generated self-signed on first start (for
//! localhost, 127.0.0.1, ::1 and the host name) and kept in the data
//! directory, so clients can pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors loading or making the certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("Cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("Bad TLS configuration")]
    Config(#[from] rustls::Error),
}

/// Where the certificate and key are.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Makes the certificate unless it exists; returns its path.
pub fn ensure_certificate(dir: &Path, hostname: &str) -> Result<PathBuf, TlsError> {
    let (cert, key) = cert_paths(dir);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    // Private, the key too when made by an older release.
    std::fs::create_dir_all(dir)
        .and_then(|()| datapath::privileges::set_mode(dir, 0o700))
        .map_err(write_err(dir))?;
    if cert.is_file() && key.is_file() {
        datapath::privileges::set_mode(&key, 0o600).map_err(write_err(&key))?;
        return Ok(cert);
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !hostname.is_empty() && hostname != "localhost" {
        names.push(hostname.to_owned());
    }
    let made = rcgen::generate_simple_self_signed(names)?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes()).map_err(write_err(&key))?;
    std::fs::write(&cert, made.cert.pem()).map_err(write_err(&cert))?;
    tracing::info!(cert = %cert.display(), "Generated a self-signed certificate");
    Ok(cert)
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The server configuration from the files in `dir`.
pub fn server_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, key) = cert_paths(dir);
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Read {
            path,
            message: e.to_string(),
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert)
        .map_err(read_err(&cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(&cert))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(read_err(&key))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the certificate in `ca_file`
/// (mgmtd's self-signed one, or a CA's).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let read_err = |e: rustls::pki_types::pem::Error| TlsError::Read {
        path: ca_file.to_owned(),
        message: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file).map_err(read_err)? {
        roots.add(c.map_err(read_err)?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The SHA-256 of the (first) certificate in `cert_file`, as lowercase
/// hex: what a join token carries so the joining host knows this server.
pub fn cert_sha256(cert_file: &Path) -> Result<String, TlsError> {
    let read_err = |message: String| TlsError::Read {
        path: cert_file.to_owned(),
        message,
    };
    let der = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| read_err(e.to_string()))?
        .next()
        .ok_or_else(|| read_err("no certificate".into()))?
        .map_err(|e| read_err(e.to_string()))?;
    Ok(hex(ring::digest::digest(
        &ring::digest::SHA256,
        der.as_ref(),
    )
    .as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client configuration that trusts exactly one server certificate, the
/// one whose SHA-256 is `sha256` (hex), whatever signed it and whatever
/// name it carries: the join token's pin, as kubeadm's discovery hash.
pub fn pinned_client_config(sha256: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        sha256: sha256.to_ascii_lowercase(),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts the one certificate with the pinned hash; the handshake's
/// signatures are still checked with it.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = hex(ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref()).as_ref());
        if got == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {got}) is not the one the join token names ({})",
                self.sha256
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_certificate_is_made_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = ensure_certificate(dir.path(), "h1").unwrap();
        let first = std::fs::read(&cert).unwrap();
        let (_, key) = cert_paths(dir.path());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ensure_certificate(dir.path(), "h1").unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        server_config(dir.path()).unwrap();
        client_config(&cert).unwrap();
    }
}
