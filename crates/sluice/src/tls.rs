//! TLS pieces shared by the adapters that build their own rustls configuration (PostgreSQL,
//! Snowflake): the system's trusted roots.

use rustls::RootCertStore;

/// The system's CA certificates; an error when there are none (a TLS client without roots
/// would refuse every server, better said at start-up).
pub(crate) fn native_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no system CA certificates found".into());
    }
    Ok(roots)
}
