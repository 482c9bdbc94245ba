//! postgres_tls: TLS to PostgreSQL as libpq reads it from the URL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), over rustls.
//!
//! tokio-postgres itself knows only `sslmode` disable/prefer/require and leaves the certificate checks to the
//! connector, so this module takes the TLS parameters out of the URL, hands tokio-postgres the rest, and
//! builds a rustls client whose certificate check is the one libpq would make:
//!
//! | sslmode | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | none; the chain as in `verify-ca` when `sslrootcert` is given |
//! | `require` | always | none; the chain as in `verify-ca` when `sslrootcert` is given |
//! | `verify-ca` | always | the chain must lead to a root (`sslrootcert`, else the system's); host name not checked |
//! | `verify-full` | always | the chain and the host name |
//!
//! `sslrootcert=system` means the system's roots and, as in libpq 16, allows only `verify-full`.

use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error_chain;

/// libpq's `sslmode`, less `allow` (plaintext first), which tokio-postgres cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// What the server's certificate must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Encrypted, but anyone may be at the other end (libpq's `prefer` and `require`).
    Nothing,
    /// The chain leads to a trusted root; any host name.
    Chain,
    /// The chain and the host name the client connected to.
    ChainAndName,
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(String),
}

/// The TLS parameters of a URL, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    pub mode: SslMode,
    pub check: Check,
    pub roots: Roots,
    /// `sslcert` and `sslkey`.
    pub client_identity: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full")]
    BadMode(String),
    #[error("sslrootcert=system needs sslmode=verify-full (as in libpq), not `{0}`")]
    WeakModeWithSystemRoots(String),
    #[error("sslcert and sslkey must be given together")]
    HalfClientIdentity,
    #[error("`{0}` in the query is not percent-encoded UTF-8")]
    BadEncoding(&'static str),
    #[error("{param} `{path}` cannot be read: {source}")]
    Read { param: &'static str, path: String, source: std::io::Error },
    #[error("{param} `{path}` holds no usable PEM certificate")]
    NoCertificate { param: &'static str, path: String },
    #[error("sslkey `{0}` holds no PEM private key")]
    NoKey(String),
    #[error("no system root certificates could be loaded (give sslrootcert=PATH)")]
    NoSystemRoots,
    #[error("{0}")]
    Url(String),
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a PostgreSQL URL asks for: tokio-postgres' settings and the TLS connector to use with them.
pub struct ConnectOptions {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub plan: TlsPlan,
}

/// Read `url` as libpq would, loading every file it names, so that a bad value or an unreadable file is
/// found at start-up. Messages never quote the URL (it may hold a password).
pub fn connect_options(url: &str) -> Result<ConnectOptions, TlsConfigError> {
    let (rest, params) = split_url(url)?;
    let plan = plan(&params)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        TlsConfigError::Url(format!("not a PostgreSQL URL: {}", error_chain(&e)))
    })?;
    config.ssl_mode(match plan.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    let tls = MakeRustlsConnect::new(client_config(&plan)?);
    Ok(ConnectOptions { config, tls, plan })
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by `***`, for Debug output.
pub fn redacted(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((user, hosts)) => match user.split_once(':') {
                    Some((name, _)) => format!("{scheme}://{name}:***@{hosts}{path}"),
                    None => head.to_string(),
                },
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| if pair.starts_with("password=") { "password=***".to_string() } else { pair.to_string() })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// The TLS parameters as written in the query (last one wins, as in libpq).
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

/// Take the TLS parameters out of the query; the rest of the URL is left byte for byte as it was.
fn split_url(url: &str) -> Result<(String, TlsParams), TlsConfigError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), TlsParams::default()));
    };
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, slot) = match key {
            "sslmode" => ("sslmode", &mut params.sslmode),
            "sslrootcert" => ("sslrootcert", &mut params.sslrootcert),
            "sslcert" => ("sslcert", &mut params.sslcert),
            "sslkey" => ("sslkey", &mut params.sslkey),
            _ => {
                kept.push(pair);
                continue;
            }
        };
        let decoded = percent_decode_str(value).decode_utf8().map_err(|_| TlsConfigError::BadEncoding(name))?;
        *slot = Some(decoded.into_owned());
    }
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, params))
}

fn plan(params: &TlsParams) -> Result<TlsPlan, TlsConfigError> {
    let system = params.sslrootcert.as_deref() == Some("system");
    let mode = match params.sslmode.as_deref() {
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some(text) => SslMode::parse(text).ok_or_else(|| TlsConfigError::BadMode(text.to_string()))?,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(TlsConfigError::WeakModeWithSystemRoots(params.sslmode.clone().unwrap_or_default()));
    }
    let roots = match params.sslrootcert.as_deref() {
        None | Some("system") => Roots::System,
        Some(path) => Roots::File(path.to_string()),
    };
    let check = match mode {
        SslMode::Disable => Check::Nothing,
        // libpq checks the chain whenever it has a root file, in every mode that uses TLS.
        SslMode::Prefer | SslMode::Require if matches!(roots, Roots::File(_)) => Check::Chain,
        SslMode::Prefer | SslMode::Require => Check::Nothing,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::ChainAndName,
    };
    let client_identity = match (&params.sslcert, &params.sslkey) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => return Err(TlsConfigError::HalfClientIdentity),
    };
    Ok(TlsPlan { mode, check, roots, client_identity })
}

fn read(param: &'static str, path: &str) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read { param, path: path.to_string(), source })
}

fn certificates(param: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = read(param, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { param, path: path.to_string() });
    }
    Ok(certs)
}

fn root_store(roots: &Roots) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let (added, _) = store.add_parsable_certificates(certificates("sslrootcert", path)?);
            if added == 0 {
                return Err(TlsConfigError::NoCertificate { param: "sslrootcert", path: path.clone() });
            }
        }
        Roots::System => {
            let (added, _) = store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(TlsConfigError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

/// The rustls client for a plan. The provider is ring's, as reqwest's, so the tree has one crypto library.
fn client_config(plan: &TlsPlan) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (plan.mode, plan.check) {
        // No TLS will be attempted, so no roots are loaded (a missing file must not stop a plaintext set-up).
        (SslMode::Disable, _) | (_, Check::Nothing) => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(WithoutName { roots: None, provider }))
        }
        (_, Check::Chain) => builder.dangerous().with_custom_certificate_verifier(Arc::new(WithoutName {
            roots: Some(Arc::new(root_store(&plan.roots)?)),
            provider,
        })),
        (_, Check::ChainAndName) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(&plan.roots)?),
                provider,
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
    };
    let mut config = match &plan.client_identity {
        None => builder.with_no_client_auth(),
        Some(_) if plan.mode == SslMode::Disable => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = certificates("sslcert", cert_path)?;
            let key = PrivateKeyDer::from_pem_slice(&read("sslkey", key_path)?)
                .map_err(|_| TlsConfigError::NoKey(key_path.clone()))?;
            builder.with_client_auth_cert(certs, key)?
        }
    };
    // PostgreSQL 17 asks for this ALPN name on direct TLS connections (sslnegotiation=direct); older servers
    // ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The checks rustls's own verifier cannot leave out: `prefer` / `require` without a root file take any
/// certificate (`roots` None) and `verify-ca` a chain to a trusted root whatever name it carries. Either way
/// the handshake must be signed by the key of the certificate shown (the session is encrypted to whoever
/// holds it).
#[derive(Debug)]
struct WithoutName {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> TlsParams {
        split_url(&format!("postgres://u:pw@h/db?{query}")).unwrap().1
    }

    fn plan_of(query: &str) -> Result<TlsPlan, TlsConfigError> {
        plan(&params(query))
    }

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_is_kept_byte_for_byte() {
        let (rest, p) = split_url(
            "postgres://u:p%40ss@h:5433/db?sslmode=verify-full&options=-csearch_path%3Dx&sslrootcert=%2Ftmp%2Fca%20dir%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@h:5433/db?options=-csearch_path%3Dx&connect_timeout=5");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/tmp/ca dir/ca.pem"));
        let (rest, p) = split_url("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(p.sslmode.as_deref(), Some("require"));
        let (rest, p) = split_url("postgresql://h/db").unwrap();
        assert_eq!((rest.as_str(), p), ("postgresql://h/db", TlsParams::default()));
    }

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redacted("postgres://app:hunter2@db1,db2:5432/x?sslmode=require&password=hunter3"),
            "postgres://app:***@db1,db2:5432/x?sslmode=require&password=***"
        );
        assert_eq!(redacted("postgres://app:p%40ss@db/x"), "postgres://app:***@db/x");
        assert_eq!(redacted("postgres://app@db/x?sslmode=verify-full"), "postgres://app@db/x?sslmode=verify-full");
        assert_eq!(redacted("sqlite:///var/lib/hookgate.db"), "sqlite:///var/lib/hookgate.db");
    }

    #[test]
    fn every_sslmode_maps_to_the_check_libpq_makes() {
        let cases = [
            ("", SslMode::Prefer, Check::Nothing),
            ("sslmode=disable", SslMode::Disable, Check::Nothing),
            ("sslmode=prefer", SslMode::Prefer, Check::Nothing),
            ("sslmode=require", SslMode::Require, Check::Nothing),
            ("sslmode=verify-ca", SslMode::VerifyCa, Check::Chain),
            ("sslmode=verify-full", SslMode::VerifyFull, Check::ChainAndName),
            // A root file turns require (and prefer) into verify-ca, as in libpq.
            ("sslmode=require&sslrootcert=/ca.pem", SslMode::Require, Check::Chain),
            ("sslrootcert=/ca.pem", SslMode::Prefer, Check::Chain),
            ("sslmode=disable&sslrootcert=/ca.pem", SslMode::Disable, Check::Nothing),
            ("sslrootcert=system", SslMode::VerifyFull, Check::ChainAndName),
            ("sslmode=require&sslmode=verify-full", SslMode::VerifyFull, Check::ChainAndName),
        ];
        for (query, mode, check) in cases {
            let plan = plan_of(query).unwrap();
            assert_eq!((plan.mode, plan.check), (mode, check), "{query}");
        }
        assert_eq!(plan_of("sslmode=verify-ca").unwrap().roots, Roots::System);
        assert_eq!(plan_of("sslrootcert=/ca.pem").unwrap().roots, Roots::File("/ca.pem".into()));
    }

    #[test]
    fn a_bad_sslmode_is_refused_with_the_choices_and_without_the_password() {
        let err = connect_options("postgres://app:hunter2@db/x?sslmode=verify_full").err().unwrap().to_string();
        assert!(err.contains("sslmode `verify_full`") && err.contains("verify-full"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for bad in ["allow", "REQUIRE", ""] {
            assert!(matches!(plan_of(&format!("sslmode={bad}")), Err(TlsConfigError::BadMode(_))), "{bad}");
        }
    }

    #[test]
    fn system_roots_allow_only_verify_full_and_client_certificates_need_both_halves() {
        assert!(matches!(
            plan_of("sslrootcert=system&sslmode=require"),
            Err(TlsConfigError::WeakModeWithSystemRoots(_))
        ));
        assert!(matches!(plan_of("sslcert=/c.pem"), Err(TlsConfigError::HalfClientIdentity)));
        assert!(matches!(plan_of("sslkey=/c.key"), Err(TlsConfigError::HalfClientIdentity)));
        assert_eq!(
            plan_of("sslcert=/c.pem&sslkey=/c.key").unwrap().client_identity,
            Some(("/c.pem".into(), "/c.key".into()))
        );
    }

    #[test]
    fn unreadable_or_empty_root_files_are_refused_naming_the_parameter() {
        let err = connect_options("postgres://app:hunter2@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(matches!(err, TlsConfigError::Read { param: "sslrootcert", .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem") && !err.to_string().contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let url = format!("postgres://h/db?sslmode=require&sslrootcert={}", junk.display());
        assert!(matches!(connect_options(&url).err().unwrap(), TlsConfigError::NoCertificate { .. }));
        let url = "postgres://h/db?sslmode=require&sslcert=/no/c.pem&sslkey=/no/c.key";
        assert!(matches!(connect_options(url).err().unwrap(), TlsConfigError::Read { param: "sslcert", .. }));
        // disable never uses TLS, so its files are not read (libpq ignores them too).
        let url = "postgres://h/db?sslmode=disable&sslrootcert=/nonexistent/ca.pem&sslcert=/no/c.pem&sslkey=/no/c.key";
        assert_eq!(connect_options(url).unwrap().config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn tokio_postgres_gets_the_rest_of_the_url_and_a_matching_mode() {
        use tokio_postgres::config::SslMode as Pg;
        let cases = [("", Pg::Prefer), ("?sslmode=disable", Pg::Disable), ("?sslmode=require", Pg::Require)];
        for (query, expected) in cases {
            let url = format!("postgres://app:pw@db.example:6543/name{query}");
            let options = connect_options(&url).unwrap();
            assert_eq!(options.config.get_ssl_mode(), expected, "{query}");
            assert_eq!(options.config.get_dbname(), Some("name"));
            assert_eq!(options.config.get_ports(), &[6543]);
        }
        let err = connect_options("postgres://h/db?sslcrl=/x").err().unwrap();
        assert!(matches!(err, TlsConfigError::Url(_)), "{err}");
    }
}
