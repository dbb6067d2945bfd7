//! A TLS listener's certificates: PEM certificate chains and keys (PKCS#8,
//! RSA, EC), several chosen by SNI. They are re-read on `reload` (SIGHUP)
//! without touching established connections: a handshake uses whatever set
//! is current.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {0}: {1}")]
    Cert(String, String),
    #[error("cannot read private key file {0}: {1}")]
    Key(String, String),
    #[error("private key {key} does not match certificate {cert}: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A certificate and its key, as the config names them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// The certificates of one listener; the first is the default when no SNI matches.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<TlsFiles>,
    current: RwLock<Arc<Vec<Arc<CertifiedKey>>>>,
}

fn load_pair(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_name = files.cert.display().to_string();
    let key_name = files.key.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(
            cert_name,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key(key_name.clone(), e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Mismatch {
            cert: cert_name,
            key: key_name,
            reason: e.to_string(),
        })
}

impl CertStore {
    pub fn load(files: Vec<TlsFiles>) -> Result<Self, TlsError> {
        let keys = files.iter().map(load_pair).collect::<Result<Vec<_>, _>>()?;
        Ok(CertStore {
            files,
            current: RwLock::new(Arc::new(keys)),
        })
    }

    /// Re-reads every file; on any error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let keys = self
            .files
            .iter()
            .map(load_pair)
            .collect::<Result<Vec<_>, _>>()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Vec<Arc<CertifiedKey>>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.snapshot();
        let by_name = hello.server_name().and_then(|sni| {
            let name = ServerName::try_from(sni).ok()?;
            keys.iter().find(|k| {
                k.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        by_name.or_else(|| keys.first()).cloned()
    }
}
