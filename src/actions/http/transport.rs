//! http::transport: the client an http action sends with — the shared one, or its own when it trusts a private
//! CA (`ca`, `ca_only`), presents a client certificate (`client_cert`, `client_key`) or talks over a Unix socket.
//!
//! The PEM files are read once, when the configuration is loaded (so `hookgate check` refuses a missing or bad
//! file by its key), and again on SIGHUP, which reloads the routes. They are not read per attempt: a rustls
//! client is built from them, and rebuilding it per request would throw away its connection pool. A rotated
//! client certificate therefore takes effect on reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::value::{invalid, ConfigError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport options as written (a path may carry the `file:` prefix that secrets use).
#[derive(Debug, Default)]
pub(super) struct TransportOptions {
    pub ca: Option<String>,
    pub ca_only: Option<bool>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub unix_socket: Option<String>,
}

/// What every client shares: rustls, redirects are answers (3xx fails the attempt), not followed.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent("hookgate")
}

/// The shared client, for actions without transport options.
pub(super) fn shared() -> reqwest::Client {
    builder().build().expect("the HTTP client (rustls) can be built")
}

/// `file:PATH` or `PATH`, relative to the configuration's directory.
fn path_of(base: &Path, written: &str) -> PathBuf {
    base.join(written.strip_prefix("file:").unwrap_or(written))
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// The action's own client, or `None` for the shared one. `key` is the action's key path.
pub(super) fn client(
    key: &str,
    options: TransportOptions,
    base: &Path,
) -> Result<Option<reqwest::Client>, ConfigError> {
    let k = |s: &str| format!("{key}.{s}");
    let TransportOptions { ca, ca_only, client_cert, client_key, unix_socket } = options;
    let own = ca.is_some() || ca_only == Some(true) || client_cert.is_some() || client_key.is_some();
    if !own && unix_socket.is_none() {
        return Ok(None);
    }
    let mut builder = builder();
    if let Some(ca) = &ca {
        let path = path_of(base, ca);
        let pem = read_pem(&k("ca"), &path)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| invalid(k("ca"), format!("{} is not a PEM certificate bundle", path.display())))?;
        if certificates.is_empty() {
            return Err(invalid(k("ca"), format!("{} holds no PEM certificate", path.display())));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    match (ca_only, &ca) {
        (Some(true), None) => return Err(invalid(k("ca_only"), "needs `ca` (the only CA to trust)")),
        (Some(true), Some(_)) => builder = builder.tls_built_in_root_certs(false),
        _ => {}
    }
    match (client_cert, client_key) {
        (Some(cert), Some(private_key)) => {
            let cert_path = path_of(base, &cert);
            let key_path = path_of(base, &private_key);
            let mut pem = read_pem(&k("client_cert"), &cert_path)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(k("client_cert"), format!("{} holds no PEM certificate", cert_path.display())));
            }
            let key_pem = read_pem(&k("client_key"), &key_path)?;
            if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                return Err(invalid(k("client_key"), format!("{} holds no PEM private key", key_path.display())));
            }
            pem.push(b'\n');
            pem.extend_from_slice(&key_pem);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                invalid(k("client_cert"), format!("{} with {}: {}", cert_path.display(), key_path.display(), cause(&e)))
            })?;
            builder = builder.identity(identity);
        }
        (Some(_), None) => return Err(invalid(k("client_key"), "missing (client_cert needs its key)")),
        (None, Some(_)) => return Err(invalid(k("client_cert"), "missing (client_key needs its certificate)")),
        (None, None) => {}
    }
    if let Some(socket) = unix_socket {
        if socket.is_empty() {
            return Err(invalid(k("unix_socket"), "empty"));
        }
        builder = builder.unix_socket(base.join(socket));
    }
    let client = builder.build().map_err(|e| invalid(key, format!("cannot build its TLS client: {}", cause(&e))))?;
    Ok(Some(client))
}

/// The innermost cause of an error (reqwest's own top message is generic).
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
