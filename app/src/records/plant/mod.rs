//! The plant database: every station's records in one PostgreSQL database that a line lead
//! reads from any PC.
//!
//! The station's SQLite history stays the source of truth. A forwarder ([`forward`]) ships what
//! the plant has not yet acknowledged, oldest first, in batches, each in one PostgreSQL
//! transaction whose writes are idempotent (`ON CONFLICT DO NOTHING` on the station id and the
//! local row id); the local watermark moves only after the plant committed. At-least-once
//! delivery with idempotent writes: every record arrives exactly once.
//!
//! - [`schema`]: the plant tables, their versioned migrations, the plant's identity;
//! - [`forward`]: one batch, `inspector forward`, and the station's [`forward::Forwarder`] thread;
//! - [`read`]: the History tab's and `inspector history`'s queries on the plant tables;
//! - this file: the URL (credentials never printed), TLS and connecting.
//!
//! Crate: `tokio-postgres` (with `postgres-types`), on a one-thread tokio runtime per worker
//! like the line I/O, TLS through rustls (`tokio-postgres-rustls`).

pub mod forward;
pub mod read;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;

pub use forward::{ForwardReport, Forwarder, ForwarderOptions, ForwarderStatus};
pub use read::PlantStore;

/// Errors of the plant database, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    /// The URL does not parse.
    #[error("plant database URL {url}: {why} (expected postgres://USER@HOST:PORT/DATABASE)")]
    Url {
        /// The URL, without its password.
        url: String,
        /// Why.
        why: String,
    },
    /// Connecting or a statement failed.
    #[error("plant database {url}: {why}")]
    Db {
        /// The URL, without its password.
        url: String,
        /// What the server or the network said.
        why: String,
    },
    /// The plant database was made by a newer app.
    #[error(
        "plant database {url} has schema version {found}, newer than this app's {supported}: update Defect Inspector on this PC (the station keeps its records until then)"
    )]
    TooNew {
        /// The URL, without its password.
        url: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// The local history failed.
    #[error(transparent)]
    Local(#[from] crate::records::history::HistoryError),
}

/// Where the plant database is: a `postgres://` URL, kept whole (with its password) only here.
#[derive(Clone, PartialEq, Eq)]
pub struct PlantUrl {
    url: String,
}

impl std::fmt::Debug for PlantUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for PlantUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PlantUrl {
    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`. A URL without a
    /// password takes `password` (Settings, or `DI_PLANT_PASSWORD`) when given.
    pub fn parse(url: &str, password: Option<&str>) -> Result<Self, PlantError> {
        let url = url.trim();
        if !is_plant_url(url) {
            return Err(PlantError::Url {
                url: redact(url),
                why: "it does not start with postgres:// or postgresql://".into(),
            });
        }
        let mut whole = url.to_string();
        if let Some(p) = password.filter(|p| !p.is_empty())
            && !has_password(url)
            && let Some(at) = url.find('@')
        {
            let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
            whole = format!("{}:{}{}", &url[..at], percent_encode(p), &url[at..]);
            debug_assert!(scheme_end < at);
        }
        let parsed = Self { url: whole };
        parsed.config()?;
        Ok(parsed)
    }

    /// The plant database Settings › Plant database names (None: forwarding is off), with the
    /// password typed there for this session, else `DI_PLANT_PASSWORD`. Errors are sentences.
    pub fn from_settings(
        p: &crate::records::settings::PlantSettings,
    ) -> Result<Option<Self>, String> {
        let url = p.url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let env = std::env::var("DI_PLANT_PASSWORD").ok();
        let pw = if p.password.0.is_empty() {
            env.as_deref()
        } else {
            Some(p.password.0.as_str())
        };
        Self::parse(url, pw).map(Some).map_err(|e| e.to_string())
    }

    /// The URL with `***` for its password: safe for logs, screens and the local database.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// The tokio-postgres configuration (connect timeout 5 s, keepalives, application name).
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, PlantError> {
        let mut c: tokio_postgres::Config =
            self.url
                .parse()
                .map_err(|e: tokio_postgres::Error| PlantError::Url {
                    url: self.redacted(),
                    why: e.to_string(),
                })?;
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(Duration::from_secs(5));
        }
        c.keepalives_idle(Duration::from_secs(10));
        c.tcp_user_timeout(Duration::from_secs(15));
        if c.get_application_name().is_none() {
            c.application_name("defect-inspector");
        }
        Ok(c)
    }

    /// An error of this database in words.
    pub(crate) fn db_err(&self, e: tokio_postgres::Error) -> PlantError {
        // The server's own message where there is one, else the whole chain of causes
        // ("error connecting to server: Connection refused (os error 111)").
        let mut words = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            if e.as_db_error().is_none() {
                words = format!("{words}: {c}");
            }
            cause = c.source();
        }
        PlantError::Db {
            url: self.redacted(),
            why: db_words(&words),
        }
    }
}

/// Whether `s` names a PostgreSQL database rather than a file.
pub fn is_plant_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A URL typed with its password, split into the URL without it and the password (decoded),
/// so that Settings saves the one and keeps the other in memory. None when it has none.
pub fn split_password(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, host) = rest.rsplit_once('@')?;
    let (user, pw) = userinfo.split_once(':')?;
    let bytes = pw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                out.push((hex(a)? * 16 + hex(b)?) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some((
        format!("{scheme}://{user}@{host}"),
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.split_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

/// `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// tokio-postgres's "db error: FATAL: …" made readable, with what to do where we know it.
fn db_words(s: &str) -> String {
    let s = s.trim_start_matches("db error: ").to_string();
    if s.contains("password authentication failed") {
        return format!(
            "{s} — check the user and password (Settings › Plant, or DI_PLANT_PASSWORD)"
        );
    }
    if s.contains("Connection refused") || s.contains("connection refused") {
        return format!("{s} — is the server running and the host and port right?");
    }
    if s.contains("does not exist") && s.contains("database") {
        return format!("{s} — create it (createdb) or fix the URL");
    }
    if s.contains("could not extend file") || s.contains("No space left") {
        return format!("{s} — the plant server's disk is full; the station keeps its records");
    }
    s
}

/// The TLS connector: rustls with ring and the system's root certificates. `sslmode=prefer`
/// (the default) uses TLS when the server offers it; `sslmode=require` insists on it.
pub(crate) fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 with ring")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        });
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Connects: the client, with its connection driven by a task on the current runtime. A URL
/// with `sslmode=disable` connects without TLS.
pub async fn connect(url: &PlantUrl) -> Result<tokio_postgres::Client, PlantError> {
    let config = url.config()?;
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| url.db_err(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("plant database connection ended: {e}");
            }
        });
        client
    } else {
        let (client, conn) = config.connect(tls()).await.map_err(|e| url.db_err(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("plant database connection ended: {e}");
            }
        });
        client
    };
    Ok(client)
}

/// A one-thread runtime for a worker that talks to the plant database.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, PlantError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PlantError::Db {
            url: String::new(),
            why: format!("no runtime: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_and_a_separate_one_is_added() {
        let u = PlantUrl::parse("postgres://lead:s3cr%40t@db.plant:5432/quality", None).unwrap();
        assert_eq!(u.redacted(), "postgres://lead:***@db.plant:5432/quality");
        assert!(!format!("{u:?} {u}").contains("s3cr"));
        let u = PlantUrl::parse("postgres://lead@db.plant/quality", Some("p@ss word")).unwrap();
        assert_eq!(u.redacted(), "postgres://lead:***@db.plant/quality");
        let c = u.config().unwrap();
        assert_eq!(c.get_password(), Some(&b"p@ss word"[..]));
        assert!(matches!(
            PlantUrl::parse("mysql://x@y/z", None),
            Err(PlantError::Url { .. })
        ));
        assert!(is_plant_url("postgresql://a@b/c") && !is_plant_url("/data/history.sqlite"));
        assert_eq!(
            split_password("postgres://lead:p%40ss%20w@db.plant:5432/quality"),
            Some((
                "postgres://lead@db.plant:5432/quality".into(),
                "p@ss w".into()
            ))
        );
        assert_eq!(split_password("postgres://lead@db.plant/quality"), None);
    }
}
