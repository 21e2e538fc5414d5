//! Configuration in two steps ("parse, don't validate"): `raw` mirrors the
//! TOML file plus `TAPGATE_SECTION__KEY` environment overrides, then
//! [`Config::from_raw`] turns it into typed values and reports *every*
//! problem with its key path, which is what `tapgate check` prints.

pub mod raw;

use crate::model::{Email, Role};
use crate::policy::{Allow, HostPattern, Methods, PathPattern, Policy, Rule, Strength};
pub use crate::ratelimit::{LimitsConfig, Rate};
use raw::RawConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tapgate_webauthn::UserVerification;

/// Which subcommand is loading the config: the demo fills in safe local
/// defaults, `serve` insists on explicit values for production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Demo,
    Serve,
}

/// One problem with the configuration, named by its key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Where the upstream service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Any HTTP origin, e.g. `http://127.0.0.1:8081` (path prefix allowed).
    Url(url::Url),
    /// The demo's built-in echo app.
    Echo,
}

/// Where the signing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Pem(String),
    /// Demo only: generate on first start and keep it in this file.
    GenerateInto(PathBuf),
}

/// Attestation trust settings, before the root files are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustConfig {
    pub builtin_roots: bool,
    /// The operator's attestation roots as read from `root_files`:
    /// (file name, PEM text), each checked to hold readable certificates.
    pub roots: Vec<(String, String)>,
    pub allowed_aaguids: Vec<String>,
    pub global: Strength,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The origin users see, e.g. `https://app.example.com` (no path).
    pub public_origin: String,
    pub public_host: String,
    pub secure: bool,
    pub upstream: Upstream,
    pub listen: SocketAddr,
    pub session_ttl: Duration,
    pub assertion_ttl: Duration,
    pub assertion_audience: String,
    pub store_url: String,
    /// PostgreSQL password read from `store.password_file`.
    pub store_password: Option<StorePassword>,
    pub signing_key: KeySource,
    pub rp_id: String,
    pub rp_name: String,
    pub user_verification: UserVerification,
    pub challenge_ttl: Duration,
    pub iap_headers: bool,
    pub oauth2_proxy_headers: bool,
    pub proxy_timeout: Duration,
    pub proxy_connect_timeout: Duration,
    /// Client connection limits (`[server]`).
    pub server: ServerLimits,
    pub routes: Vec<Rule>,
    /// Declared roles (`roles = [...]`), if any.
    pub roles: Option<Vec<Role>>,
    pub trust: TrustConfig,
    /// Rate limits on the ceremony endpoints (`[limits]`).
    pub limits: LimitsConfig,
    /// Things worth saying that do not stop the start (unknown TAPGATE_
    /// variables, undeclared roles).
    pub warnings: Vec<Problem>,
    /// Demo: redirect requests that arrive under another host name (e.g.
    /// 127.0.0.1) to the public origin, since WebAuthn needs `localhost`.
    pub canonical_host_redirect: bool,
}

/// A database password: never printed, not even by `{:?}`.
#[derive(Clone)]
pub struct StorePassword(pub String);

impl std::fmt::Debug for StorePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorePassword(…)")
    }
}

/// How long slow or idle clients may hold a connection, and how many
/// connections there may be at once (`[server]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Upper bound for the assertion lifetime (PRODUCT.md §3).
pub const MAX_ASSERTION_TTL: Duration = Duration::from_secs(300);

impl Config {
    /// Load from an optional file plus the process environment.
    pub fn load(mode: Mode, file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_sources(mode, text.as_deref(), &env)
    }

    /// The injectable form used by tests: TOML text and an environment map.
    pub fn from_sources(
        mode: Mode,
        toml_text: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut doc = match toml_text {
            Some(t) => match t.parse::<toml::Table>() {
                Ok(table) => table,
                Err(e) => {
                    return Err(ConfigError::Invalid(vec![Problem {
                        key: "(file)".into(),
                        message: format!("not valid TOML: {}", e.message()),
                    }]));
                }
            },
            None => toml::Table::new(),
        };
        let mut warnings = Vec::new();
        apply_env_overrides(&mut doc, env, &mut problems, &mut warnings);
        let raw: RawConfig = match toml::Value::Table(doc).try_into() {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(Problem {
                    key: "(file)".into(),
                    message: e.message().to_owned(),
                });
                return Err(ConfigError::Invalid(problems));
            }
        };
        let port = env
            .iter()
            .find(|(k, _)| k == "PORT")
            .map(|(_, v)| v.as_str());
        // On Cloud Run (which sets K_SERVICE) every request comes through
        // its front end: without this, all clients would share the front
        // end's address and one rate-limit budget.
        let mut raw = raw;
        if raw.limits.trusted_proxies.is_none() && env.iter().any(|(k, _)| k == "K_SERVICE") {
            raw.limits.trusted_proxies = Some(1);
        }
        let mut config = Config::from_raw(mode, raw, port, problems)?;
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(config)
    }

    fn from_raw(
        mode: Mode,
        raw: RawConfig,
        port_env: Option<&str>,
        mut problems: Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let mut p = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };

        let port: u16 = match port_env {
            Some(v) => v.parse().unwrap_or_else(|_| {
                p("PORT", format!("{v:?} is not a TCP port number"));
                8080
            }),
            None => 8080,
        };
        let listen = match (&raw.listen, mode, port_env) {
            (Some(l), _, _) => l.parse().unwrap_or_else(|_| {
                p(
                    "listen",
                    format!("{l:?} is not an address like 127.0.0.1:8080"),
                );
                SocketAddr::from(([127, 0, 0, 1], port))
            }),
            // Cloud Run sets PORT and needs every interface.
            (None, Mode::Serve, Some(_)) => SocketAddr::from(([0, 0, 0, 0], port)),
            _ => SocketAddr::from(([127, 0, 0, 1], port)),
        };

        let public_url = match (&raw.public_url, mode) {
            (Some(u), _) => u.clone(),
            (None, Mode::Demo) => format!("http://localhost:{}", listen.port()),
            (None, Mode::Serve) => {
                p(
                    "public_url",
                    "missing: set the address users open, e.g. https://app.example.com".into(),
                );
                "http://localhost".into()
            }
        };
        let (public_origin, public_host, secure) = match url::Url::parse(&public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if u.path() != "/" || u.query().is_some() {
                    p(
                        "public_url",
                        format!(
                            "{public_url:?} must be an origin without a path, e.g. https://app.example.com"
                        ),
                    );
                }
                let host = u.host_str().unwrap_or_default().to_owned();
                let secure = u.scheme() == "https";
                if !secure && host != "localhost" {
                    p(
                        "public_url",
                        format!(
                            "{public_url:?} uses http: browsers only allow passkeys over https (or on localhost)"
                        ),
                    );
                }
                (u.origin().ascii_serialization(), host, secure)
            }
            _ => {
                p(
                    "public_url",
                    format!("{public_url:?} is not an http(s) URL"),
                );
                ("http://localhost".into(), "localhost".into(), false)
            }
        };

        let upstream = match (&raw.upstream, mode) {
            (Some(u), _) => match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                    if url.scheme() == "https" {
                        p("upstream", "https upstreams are not supported yet: point tapgate at the service's plain-HTTP port (sidecar or private network)".into());
                    }
                    Upstream::Url(url)
                }
                _ => {
                    p(
                        "upstream",
                        format!("{u:?} is not an http URL like http://127.0.0.1:8081"),
                    );
                    Upstream::Echo
                }
            },
            (None, Mode::Demo) => Upstream::Echo,
            (None, Mode::Serve) => {
                p(
                    "upstream",
                    "missing: set the URL of the service to protect, e.g. http://127.0.0.1:8081"
                        .into(),
                );
                Upstream::Echo
            }
        };

        let session_ttl = duration(&mut p, "session.ttl", raw.session.ttl.as_deref(), "1h");
        if session_ttl < Duration::from_secs(60) || session_ttl > Duration::from_secs(30 * 86400) {
            p("session.ttl", "must be between 1m and 30d".into());
        }
        let assertion_ttl = duration(&mut p, "assertion.ttl", raw.assertion.ttl.as_deref(), "60s");
        if assertion_ttl > MAX_ASSERTION_TTL || assertion_ttl < Duration::from_secs(10) {
            p(
                "assertion.ttl",
                "must be between 10s and 300s (upstreams must not accept stale identity)".into(),
            );
        }
        let assertion_audience = raw
            .assertion
            .audience
            .clone()
            .unwrap_or_else(|| public_origin.clone());
        if assertion_audience.is_empty() {
            p("assertion.audience", "must not be empty".into());
        }

        let store_url = match (&raw.store.url, mode) {
            (Some(u), _) => u.clone(),
            (None, Mode::Demo) => "sqlite://tapgate-data/tapgate.db".into(),
            (None, Mode::Serve) => {
                p(
                    "store.url",
                    "missing: e.g. sqlite:///var/lib/tapgate/tapgate.db or postgres://…".into(),
                );
                String::new()
            }
        };
        let known_scheme = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| store_url.starts_with(p));
        if !store_url.is_empty() && !known_scheme {
            p(
                "store.url",
                format!("{store_url:?}: use sqlite://PATH or postgres://…"),
            );
        }

        let store_password = match &raw.store.password_file {
            None => None,
            Some(_) if !store_url.starts_with("postgres") => {
                p(
                    "store.password_file",
                    "applies to a postgres:// store only".into(),
                );
                None
            }
            Some(path) => match std::fs::read_to_string(path) {
                // A secret file usually ends with a newline; the password does not.
                Ok(text) if !text.trim_end_matches(['\r', '\n']).is_empty() => Some(StorePassword(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                )),
                Ok(_) => {
                    p("store.password_file", format!("{path}: the file is empty"));
                    None
                }
                Err(e) => {
                    p("store.password_file", format!("cannot read {path}: {e}"));
                    None
                }
            },
        };

        let signing_key = match (&raw.keys.signing_key, &raw.keys.signing_key_file, mode) {
            (Some(_), Some(_), _) => {
                p(
                    "keys",
                    "set signing_key or signing_key_file, not both".into(),
                );
                KeySource::Pem(String::new())
            }
            (Some(pem), None, _) => KeySource::Pem(pem.clone()),
            (None, Some(f), _) => KeySource::File(PathBuf::from(f)),
            (None, None, Mode::Demo) => {
                KeySource::GenerateInto(PathBuf::from("tapgate-data/signing-key.pem"))
            }
            (None, None, Mode::Serve) => {
                p("keys.signing_key_file", "missing: generate one with `tapgate keygen > key.pem` and point signing_key_file at it (or set TAPGATE_KEYS__SIGNING_KEY)".into());
                KeySource::Pem(String::new())
            }
        };

        let rp_id = raw
            .webauthn
            .rp_id
            .clone()
            .unwrap_or_else(|| public_host.clone());
        if !(public_host == rp_id || public_host.ends_with(&format!(".{rp_id}"))) {
            p(
                "webauthn.rp_id",
                format!("{rp_id:?} must be {public_host:?} or a parent domain of it"),
            );
        }
        if rp_id.parse::<std::net::IpAddr>().is_ok() || rp_id.starts_with('[') {
            p(
                "public_url",
                "WebAuthn does not work on IP addresses: use a host name (localhost for local use)"
                    .into(),
            );
        }
        let rp_name = raw
            .webauthn
            .rp_name
            .clone()
            .unwrap_or_else(|| "tapgate".into());
        let user_verification = match raw
            .webauthn
            .user_verification
            .as_deref()
            .unwrap_or("required")
        {
            "required" => UserVerification::Required,
            "preferred" => UserVerification::Preferred,
            "discouraged" => UserVerification::Discouraged,
            other => {
                p(
                    "webauthn.user_verification",
                    format!("{other:?}: use required, preferred or discouraged"),
                );
                UserVerification::Required
            }
        };
        let challenge_ttl = duration(
            &mut p,
            "webauthn.challenge_ttl",
            raw.webauthn.challenge_ttl.as_deref(),
            "2m",
        );
        if challenge_ttl < Duration::from_secs(10) || challenge_ttl > Duration::from_secs(600) {
            p(
                "webauthn.challenge_ttl",
                "must be between 10s and 10m".into(),
            );
        }

        let proxy_timeout = duration(&mut p, "proxy.timeout", raw.proxy.timeout.as_deref(), "60s");
        let proxy_connect_timeout = duration(
            &mut p,
            "proxy.connect_timeout",
            raw.proxy.connect_timeout.as_deref(),
            "5s",
        );

        let server = server_limits(&raw.server, &mut p);

        let roles = raw.roles.as_ref().map(|list| {
            list.iter()
                .filter_map(|r| Role::parse(r).map_err(|e| p("roles", e)).ok())
                .collect::<Vec<Role>>()
        });
        let trust = trust_config(&raw.trust, &mut p);
        let limits = limits_config(&raw.limits, &mut p);
        let mut routes = Vec::new();
        for (i, r) in raw.route.iter().enumerate() {
            if let Some(rule) = route(i, r, roles.as_deref(), &mut p) {
                routes.push(rule);
            }
        }
        if routes.len() == raw.route.len() {
            for (shadowed, by) in Policy::shadowed(&routes) {
                p(
                    &format!("route[{shadowed}]"),
                    format!(
                        "unreachable: route[{by}] ({}) comes first and matches every request this rule matches; move this rule above it or narrow route[{by}]",
                        routes[by].describe()
                    ),
                );
            }
        }
        let mut warnings = Vec::new();
        if roles.is_none() && routes.iter().any(|r| !r.allow.roles.is_empty()) {
            warnings.push(Problem {
                key: "roles".into(),
                message: "not set: declare roles = [\"admin\", …] so that a mistyped role in a route is caught".into(),
            });
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            public_origin,
            public_host,
            secure,
            upstream,
            listen,
            session_ttl,
            assertion_ttl,
            assertion_audience,
            store_url,
            store_password,
            signing_key,
            rp_id,
            rp_name,
            user_verification,
            challenge_ttl,
            iap_headers: raw.headers.iap.unwrap_or(false),
            oauth2_proxy_headers: raw.headers.oauth2_proxy.unwrap_or(false),
            proxy_timeout,
            proxy_connect_timeout,
            server,
            routes,
            roles,
            trust,
            limits,
            warnings,
            canonical_host_redirect: mode == Mode::Demo,
        })
    }
}

fn route(
    i: usize,
    r: &raw::RawRoute,
    declared: Option<&[Role]>,
    p: &mut impl FnMut(&str, String),
) -> Option<Rule> {
    let key = |k: &str| format!("route[{i}].{k}");
    let path = match r.path.as_deref().map(PathPattern::parse) {
        Some(Ok(path)) => Some(path),
        Some(Err(e)) => {
            p(&key("path"), e);
            None
        }
        None => {
            p(&key("path"), "missing: e.g. path = \"/admin/\"".into());
            None
        }
    };
    let host = match r.host.as_deref().map(HostPattern::parse) {
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => {
            p(&key("host"), e);
            None
        }
        None => None,
    };
    let methods = match &r.methods {
        Some(list) => Methods::parse(list).unwrap_or_else(|e| {
            p(&key("methods"), e);
            Methods::ALL
        }),
        None => Methods::ALL,
    };
    let mut allow = Allow {
        public: r.public.unwrap_or(false),
        any_user: r.allow_any_user.unwrap_or(false),
        ..Allow::default()
    };
    for role in &r.allow_roles {
        match Role::parse(role) {
            Ok(role) if declared.is_some_and(|d| !d.contains(&role)) => p(
                &key("allow_roles"),
                format!(
                    "{:?} is not one of the declared roles ({})",
                    role.as_str(),
                    declared
                        .unwrap_or_default()
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Ok(role) => allow.roles.push(role),
            Err(e) => p(&key("allow_roles"), e),
        }
    }
    for email in &r.allow_emails {
        match Email::parse(email) {
            Ok(e) => allow.emails.push(e),
            Err(e) => p(&key("allow_emails"), e),
        }
    }
    for domain in &r.allow_domains {
        let d = domain.trim().trim_start_matches('@').to_ascii_lowercase();
        match HostPattern::parse(&d) {
            Ok(HostPattern::Exact(d)) => allow.domains.push(d),
            _ => p(
                &key("allow_domains"),
                format!("{domain:?} is not an email domain like example.com"),
            ),
        }
    }
    let names_someone = allow.any_user
        || !r.allow_roles.is_empty()
        || !r.allow_emails.is_empty()
        || !r.allow_domains.is_empty();
    if allow.public && names_someone {
        p(
            &key("public"),
            "a public route admits everyone; remove public or the allow_* keys".into(),
        );
    }
    if !allow.public && !names_someone {
        p(
            &key("allow_roles"),
            "missing: say who may pass (allow_roles, allow_emails, allow_domains or allow_any_user = true) or set public = true".into(),
        );
    }
    let max_auth_age = r
        .max_auth_age
        .as_deref()
        .and_then(|v| match humantime::parse_duration(v) {
            Ok(d) if d.as_secs() >= 10 => Some(d),
            Ok(_) => {
                p(
                    &key("max_auth_age"),
                    "must be at least 10s (a tap takes a few seconds)".into(),
                );
                None
            }
            Err(_) => {
                p(
                    &key("max_auth_age"),
                    format!("{v:?} is not a duration like 90s, 5m or 1h"),
                );
                None
            }
        });
    let hardware = match r.credentials.as_deref() {
        None | Some("any") => false,
        Some("hardware") => true,
        Some(other) => {
            p(
                &key("credentials"),
                format!("{other:?}: use \"any\" or \"hardware\""),
            );
            false
        }
    };
    let strength = Strength {
        hardware,
        deny_synced: !r.allow_synced.unwrap_or(!hardware),
        require_uv: r.require_uv.unwrap_or(false),
    };
    if allow.public && (max_auth_age.is_some() || strength != Strength::default()) {
        p(
            &key("public"),
            "a public route cannot also require a fresh or strong tap".into(),
        );
    }
    let min_keys = match r.min_keys {
        Some(n) if (1..=10).contains(&n) => n,
        Some(n) => {
            p(
                &key("min_keys"),
                format!("{n} is out of range: use 1 to 10 (2 asks for a backup key)"),
            );
            0
        }
        None => 0,
    };
    if allow.public && min_keys > 0 {
        p(&key("min_keys"), "has no effect on a public route".into());
    }
    Some(Rule {
        host,
        path: path?,
        methods,
        allow,
        max_auth_age,
        strength,
        min_keys,
    })
}

/// Read the operator's root certificates (PEM, one or more per file).
fn read_roots(files: &[String], p: &mut impl FnMut(&str, String)) -> Vec<(String, String)> {
    let mut roots = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let key = format!("trust.root_files[{i}]");
        match std::fs::read_to_string(f) {
            Ok(text) => match tapgate_webauthn::TrustStore::empty().add_pem(f, &text) {
                Ok(0) => p(&key, format!("{f} holds no PEM \"CERTIFICATE\" block")),
                Ok(_) => roots.push((f.clone(), text)),
                Err(e) => p(&key, e.to_string()),
            },
            Err(e) => p(&key, format!("cannot read {f}: {e}")),
        }
    }
    roots
}

impl TrustConfig {
    /// The attestation roots in force: the shipped ones (unless turned off)
    /// plus the operator's.
    pub fn store(&self) -> tapgate_webauthn::TrustStore {
        let mut store = if self.builtin_roots {
            tapgate_webauthn::TrustStore::builtin()
        } else {
            tapgate_webauthn::TrustStore::empty()
        };
        for (name, pem) in &self.roots {
            // Each file was parsed when the configuration was read.
            let _ = store.add_pem(name, pem);
        }
        store
    }
}

fn trust_config(t: &raw::RawTrust, p: &mut impl FnMut(&str, String)) -> TrustConfig {
    let mut aaguids = Vec::new();
    for a in t.allowed_aaguids.iter().flatten() {
        let hex: String = a
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            aaguids.push(format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            ));
        } else {
            p(
                "trust.allowed_aaguids",
                format!("{a:?} is not an AAGUID like cb69481e-8ff7-4039-93ec-0a2729a154a8"),
            );
        }
    }
    let hardware = match t.credentials.as_deref() {
        None | Some("any") => false,
        Some("hardware") => true,
        Some(other) => {
            p(
                "trust.credentials",
                format!("{other:?}: use \"any\" or \"hardware\""),
            );
            false
        }
    };
    TrustConfig {
        builtin_roots: t.builtin_roots.unwrap_or(true),
        roots: read_roots(t.root_files.as_deref().unwrap_or_default(), p),
        allowed_aaguids: aaguids,
        global: Strength {
            hardware,
            deny_synced: !t.allow_synced.unwrap_or(!hardware),
            require_uv: false,
        },
    }
}

fn limits_config(l: &raw::RawLimits, p: &mut impl FnMut(&str, String)) -> LimitsConfig {
    let d = LimitsConfig::default();
    let mut int = |key: &str, v: Option<i64>, default: u64, range: (u64, u64), hint: &str| match v {
        None => default,
        Some(n) if n >= 0 && (range.0..=range.1).contains(&n.unsigned_abs()) => n.unsigned_abs(),
        Some(n) => {
            p(
                key,
                format!(
                    "{n} is out of range: use {} to {} ({hint})",
                    range.0, range.1
                ),
            );
            default
        }
    };
    let rate = |per_minute: u64, burst: u64| Rate {
        per_minute: u32::try_from(per_minute).unwrap_or(u32::MAX),
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
    };
    let per_ip = rate(
        int(
            "limits.ip_per_minute",
            l.ip_per_minute,
            d.per_ip.per_minute.into(),
            (1, 1_000_000),
            "ceremony requests a minute from one address",
        ),
        int(
            "limits.ip_burst",
            l.ip_burst,
            d.per_ip.burst.into(),
            (1, 100_000),
            "requests at once from one address",
        ),
    );
    let per_account = rate(
        int(
            "limits.account_per_minute",
            l.account_per_minute,
            d.per_account.per_minute.into(),
            (1, 1_000_000),
            "ceremony requests a minute naming one account",
        ),
        int(
            "limits.account_burst",
            l.account_burst,
            d.per_account.burst.into(),
            (1, 100_000),
            "requests at once naming one account",
        ),
    );
    let max_tracked = int(
        "limits.max_tracked",
        l.max_tracked,
        d.max_tracked as u64,
        (1_000, 10_000_000),
        "addresses and accounts remembered per limit",
    );
    let trusted_proxies = int(
        "limits.trusted_proxies",
        l.trusted_proxies,
        0,
        (0, 10),
        "proxies in front of tapgate that append to X-Forwarded-For",
    );
    LimitsConfig {
        enabled: l.enabled.unwrap_or(d.enabled),
        per_ip,
        per_account,
        max_tracked: usize::try_from(max_tracked).unwrap_or(d.max_tracked),
        trusted_proxies: usize::try_from(trusted_proxies).unwrap_or(0),
    }
}

fn server_limits(raw: &raw::RawServer, p: &mut impl FnMut(&str, String)) -> ServerLimits {
    let header_read_timeout = duration(
        p,
        "server.header_read_timeout",
        raw.header_read_timeout.as_deref(),
        "10s",
    );
    if header_read_timeout < Duration::from_secs(1)
        || header_read_timeout > Duration::from_secs(300)
    {
        p(
            "server.header_read_timeout",
            "must be between 1s and 5m".into(),
        );
    }
    let idle_timeout = duration(
        p,
        "server.idle_timeout",
        raw.idle_timeout.as_deref(),
        "620s",
    );
    if idle_timeout < Duration::from_secs(1) || idle_timeout > Duration::from_secs(24 * 3600) {
        p("server.idle_timeout", "must be between 1s and 24h".into());
    }
    let max_connections = match raw.max_connections {
        None => 10_000,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(n) => {
            p(
                "server.max_connections",
                format!("{n} is out of range: use a number from 1 to 1000000"),
            );
            10_000
        }
    };
    ServerLimits {
        header_read_timeout,
        idle_timeout,
        max_connections,
    }
}

fn duration(
    p: &mut impl FnMut(&str, String),
    key: &str,
    value: Option<&str>,
    default: &str,
) -> Duration {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).unwrap_or_else(|_| {
        p(key, format!("{v:?} is not a duration like 90s, 5m or 1h"));
        humantime::parse_duration(default).unwrap_or_default()
    })
}

/// `TAPGATE_SESSION__TTL=2h` sets `session.ttl`; `TAPGATE_UPSTREAM=…` sets
/// `upstream`. Values that parse as a TOML value (numbers, booleans,
/// arrays) are taken as such; anything else is a string.
fn apply_env_overrides(
    doc: &mut toml::Table,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("TAPGATE_"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let key = name["TAPGATE_".len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".");
        if !raw::ENV_KEYS.contains(&key.as_str()) {
            // Other tools use TAPGATE_ too (test runners, wrappers): say
            // so, but do not refuse to start.
            warnings.push(Problem {
                key: name.clone(),
                message: "not a configuration key; ignored".into(),
            });
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut table = &mut *doc;
        let path: Vec<&str> = key.split('.').collect();
        for section in &path[..path.len() - 1] {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => table = t,
                _ => {
                    problems.push(Problem {
                        key: name.clone(),
                        message: format!("{section} is not a section in the file"),
                    });
                    return;
                }
            }
        }
        table.insert(path[path.len() - 1].to_owned(), parsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(mode: Mode, toml: &str, e: &[(&str, &str)]) -> Vec<String> {
        match Config::from_sources(mode, Some(toml), &env(e)) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid(ps)) => ps.into_iter().map(|p| p.key).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_database_password_comes_from_a_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        let toml = format!(
            "[store]\nurl = \"postgres://tapgate@db/tapgate\"\npassword_file = \"{}\"\n",
            file.display()
        );
        let c = Config::from_sources(Mode::Demo, Some(&toml), &[]).unwrap();
        assert_eq!(c.store_password.as_ref().unwrap().0, "s3cret-pw");
        assert!(!format!("{c:?}").contains("s3cret"));
        // Also from the environment, as a mounted secret's path.
        let c = Config::from_sources(
            Mode::Demo,
            Some("[store]\nurl = \"postgres://tapgate@db/tapgate\"\n"),
            &env(&[("TAPGATE_STORE__PASSWORD_FILE", &file.display().to_string())]),
        )
        .unwrap();
        assert!(c.store_password.is_some());

        std::fs::write(&file, "\n").unwrap();
        assert_eq!(problems(Mode::Demo, &toml, &[]), ["store.password_file"]);
        let missing = toml.replace("pw\"", "nope\"");
        assert_eq!(problems(Mode::Demo, &missing, &[]), ["store.password_file"]);
        let sqlite = format!(
            "[store]\nurl = \"sqlite://x.db\"\npassword_file = \"{}\"\n",
            file.display()
        );
        assert_eq!(problems(Mode::Demo, &sqlite, &[]), ["store.password_file"]);
    }

    #[test]
    fn demo_defaults_are_local_and_complete() {
        let c = Config::from_sources(Mode::Demo, None, &[]).unwrap();
        assert_eq!(c.public_origin, "http://localhost:8080");
        assert_eq!(c.rp_id, "localhost");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.upstream, Upstream::Echo);
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        assert_eq!(c.assertion_ttl, Duration::from_secs(60));
        assert_eq!(c.challenge_ttl, Duration::from_secs(120));
        assert!(!c.secure);
    }

    #[test]
    fn server_limits_have_defaults_env_overrides_and_bounds() {
        let c = Config::from_sources(Mode::Demo, None, &[]).unwrap();
        assert_eq!(
            c.server,
            ServerLimits {
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(620),
                max_connections: 10_000,
            }
        );
        let c = Config::from_sources(
            Mode::Demo,
            Some("[server]\nheader_read_timeout = \"5s\"\nmax_connections = 64\n"),
            &env(&[("TAPGATE_SERVER__IDLE_TIMEOUT", "75s")]),
        )
        .unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.server.max_connections, 64);
        assert_eq!(
            problems(
                Mode::Demo,
                "[server]\nheader_read_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n",
                &[]
            ),
            [
                "server.header_read_timeout",
                "server.idle_timeout",
                "server.max_connections"
            ]
        );
    }

    #[test]
    fn port_env_moves_demo_and_public_url() {
        let c = Config::from_sources(Mode::Demo, None, &env(&[("PORT", "9123")])).unwrap();
        assert_eq!(c.public_origin, "http://localhost:9123");
        assert_eq!(c.listen.port(), 9123);
    }

    #[test]
    fn env_overrides_file_values() {
        let c = Config::from_sources(
            Mode::Demo,
            Some("upstream = \"http://127.0.0.1:1\"\n[session]\nttl = \"2h\"\n"),
            &env(&[
                ("TAPGATE_UPSTREAM", "http://127.0.0.1:3000"),
                ("TAPGATE_SESSION__TTL", "30m"),
                ("TAPGATE_HEADERS__IAP", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.upstream,
            Upstream::Url("http://127.0.0.1:3000".parse().unwrap())
        );
        assert_eq!(c.session_ttl, Duration::from_secs(1800));
        assert!(c.iap_headers);
    }

    #[test]
    fn serve_requires_explicit_production_values() {
        let keys = problems(Mode::Serve, "", &[]);
        assert_eq!(
            keys,
            vec![
                "public_url",
                "upstream",
                "store.url",
                "keys.signing_key_file"
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let keys = problems(
            Mode::Demo,
            r#"
public_url = "http://app.example.com"
[session]
ttl = "forever"
[assertion]
ttl = "10m"
[webauthn]
user_verification = "sometimes"
[[route]]
path = "admin"
allow_roles = ["admin"]
[[route]]
path = "/x"
allow_roles = ["Bad Role"]
"#,
            &[],
        );
        assert_eq!(
            keys,
            vec![
                "public_url",
                "session.ttl",
                "assertion.ttl",
                "webauthn.user_verification",
                "route[0].path",
                "route[1].allow_roles",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let keys = problems(Mode::Demo, "[sesion]\nttl = \"1h\"\n", &[]);
        assert_eq!(keys, vec!["(file)"]);
    }

    #[test]
    fn ip_addresses_cannot_be_relying_parties() {
        let keys = problems(Mode::Demo, "public_url = \"https://10.0.0.1\"\n", &[]);
        assert!(keys.contains(&"public_url".to_string()));
    }

    #[test]
    fn limits_default_to_on_and_every_key_can_be_set_from_the_environment() {
        let c = Config::from_sources(Mode::Demo, None, &[]).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert!(c.limits.enabled);
        assert_eq!(
            c.limits.per_ip,
            Rate {
                per_minute: 60,
                burst: 20
            }
        );
        assert_eq!(
            c.limits.per_account,
            Rate {
                per_minute: 10,
                burst: 10
            }
        );
        assert_eq!(c.limits.trusted_proxies, 0);
        let c = Config::from_sources(
            Mode::Demo,
            Some("[limits]\nip_per_minute = 5\n"),
            &env(&[
                ("TAPGATE_LIMITS__ENABLED", "false"),
                ("TAPGATE_LIMITS__IP_BURST", "3"),
                ("TAPGATE_LIMITS__ACCOUNT_PER_MINUTE", "2"),
                ("TAPGATE_LIMITS__ACCOUNT_BURST", "4"),
                ("TAPGATE_LIMITS__MAX_TRACKED", "5000"),
                ("TAPGATE_LIMITS__TRUSTED_PROXIES", "1"),
            ]),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.limits,
            LimitsConfig {
                enabled: false,
                per_ip: Rate {
                    per_minute: 5,
                    burst: 3
                },
                per_account: Rate {
                    per_minute: 2,
                    burst: 4
                },
                max_tracked: 5000,
                trusted_proxies: 1,
            }
        );
    }

    #[test]
    fn on_cloud_run_the_front_end_is_a_trusted_proxy_unless_configured() {
        let on_run = env(&[("K_SERVICE", "app")]);
        let c = Config::from_sources(Mode::Demo, None, &on_run).unwrap();
        assert_eq!(c.limits.trusted_proxies, 1);
        let c = Config::from_sources(Mode::Demo, Some("[limits]\ntrusted_proxies = 0\n"), &on_run)
            .unwrap();
        assert_eq!(c.limits.trusted_proxies, 0);
    }

    #[test]
    fn limits_out_of_range_are_reported_with_their_key() {
        let keys = problems(
            Mode::Demo,
            "[limits]\nip_per_minute = 0\nip_burst = -1\naccount_per_minute = 99999999999\naccount_burst = 0\nmax_tracked = 10\ntrusted_proxies = 11\n",
            &[],
        );
        assert_eq!(
            keys,
            vec![
                "limits.ip_per_minute",
                "limits.ip_burst",
                "limits.account_per_minute",
                "limits.account_burst",
                "limits.max_tracked",
                "limits.trusted_proxies",
            ]
        );
        assert_eq!(
            problems(Mode::Demo, "[limits]\nper_ip = 3\n", &[]),
            vec!["(file)"]
        );
    }

    #[test]
    fn https_public_url_means_secure_cookies() {
        let c = Config::from_sources(
            Mode::Demo,
            Some("public_url = \"https://app.example.com\"\n"),
            &[],
        )
        .unwrap();
        assert!(c.secure);
        assert_eq!(c.assertion_audience, "https://app.example.com");
    }
}
