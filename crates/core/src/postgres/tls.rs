//! TLS for lifeboat's own PostgreSQL connections, as libpq's `sslmode`: `prefer` and
//! `require` encrypt without checking who answers (the handshake's signatures still are);
//! `verify-ca` checks that the server's certificate chains to the CA file (`sslrootcert`),
//! `verify-full` also that it names the host connected to.

use crate::error::{Error, Result};

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verify {
    /// Also its name (`verify-full`), not only its signer (`verify-ca`).
    pub full: bool,
    /// The CA file (`sslrootcert`, else libpq's `~/.postgresql/root.crt`).
    pub root: std::path::PathBuf,
}

/// TLS for lifeboat's own connections: without `verify`, encryption without certificate
/// verification, which is what libpq's `sslmode=require` (and `prefer`) give; with it, the
/// certificate checked against the CA file, and with `verify-full` its name too.
pub(crate) fn connector(
    verify: Option<&Verify>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        client_config(verify)?,
    ))
}

/// The rustls configuration of [`connector`], for connections lifeboat speaks itself (the
/// replication protocol).
pub(crate) fn client_config(verify: Option<&Verify>) -> Result<rustls::ClientConfig> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous();
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match verify {
        None => Arc::new(Lenient {
            provider,
            signer: None,
        }),
        Some(verify) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(&verify.root)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::Config(format!(
                        "`sslrootcert` `{}` cannot be read as PEM certificates: {e}",
                        verify.root.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Config(format!(
                    "`sslrootcert` `{}` holds no certificate: give the CA that signed the server's",
                    verify.root.display()
                )));
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::Config(format!("`sslrootcert`: {e}")))?;
            if verify.full {
                webpki
            } else {
                Arc::new(Lenient {
                    provider,
                    signer: Some(webpki),
                })
            }
        }
    };
    let config = builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// The certificate check of `require` (none: the handshake's signatures only, so that the
/// session key belongs to whoever holds the certificate) and of `verify-ca` (`signer`: it must
/// chain to the CA file, whatever name it holds).
#[derive(Debug)]
struct Lenient {
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    signer: Option<std::sync::Arc<rustls::client::WebPkiServerVerifier>>,
}

impl rustls::client::danger::ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error as TlsError};
        let verified = rustls::client::danger::ServerCertVerified::assertion();
        let Some(signer) = &self.signer else {
            return Ok(verified);
        };
        match signer.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(verified),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
