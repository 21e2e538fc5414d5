//! The serde mirror of `tapgate.toml`: every field optional and stringly,
//! so that *all* problems can be reported at once by `Config::from_raw`.
//! Unknown keys are errors (a typo must never silently disable a rule).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub public_url: Option<String>,
    pub upstream: Option<String>,
    pub listen: Option<String>,
    /// The roles this deployment uses; when set, every role named in a
    /// route or an invite must be one of them (catches typos).
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub assertion: RawAssertion,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub webauthn: RawWebauthn,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub trust: RawTrust,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub route: Vec<RawRoute>,
}

/// Which authenticators count as hardware.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// Use the shipped attestation roots (FIDO vendors). Default true.
    pub builtin_roots: Option<bool>,
    /// Extra attestation root certificates (PEM files) of the operator.
    pub root_files: Option<Vec<String>>,
    /// AAGUIDs that count as hardware when their attestation verifies.
    pub allowed_aaguids: Option<Vec<String>>,
    /// Global floor for every credential: "any" or "hardware".
    pub credentials: Option<String>,
    /// Global: may synced (backup-eligible) passkeys be registered/used?
    pub allow_synced: Option<bool>,
}

/// Rate limits on the ceremony endpoints. Integers are read as `i64` so
/// that a negative or huge value is reported with its key path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub enabled: Option<bool>,
    pub ip_per_minute: Option<i64>,
    pub ip_burst: Option<i64>,
    pub account_per_minute: Option<i64>,
    pub account_burst: Option<i64>,
    pub max_tracked: Option<i64>,
    /// Proxies in front of tapgate that append to `X-Forwarded-For`.
    pub trusted_proxies: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    pub ttl: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    /// PostgreSQL: a file holding only the password (a mounted secret).
    pub password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Path to a PKCS#8 PEM P-256 private key.
    pub signing_key_file: Option<String>,
    /// The PEM itself (for `TAPGATE_KEYS__SIGNING_KEY` from a secret manager).
    pub signing_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebauthn {
    pub rp_id: Option<String>,
    pub rp_name: Option<String>,
    pub user_verification: Option<String>,
    pub challenge_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Also send Google IAP-style `X-Goog-Authenticated-User-*` headers.
    pub iap: Option<bool>,
    /// Also send oauth2-proxy-style `X-Auth-Request-*` headers.
    pub oauth2_proxy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// How long to wait for the upstream's response headers.
    pub timeout: Option<String>,
    /// How long to wait for a TCP connection to the upstream.
    pub connect_timeout: Option<String>,
}

/// How tapgate treats client connections (slow or idle clients).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// A request head (request line and headers) must arrive within this
    /// time of its first byte (of the connection, for the first request).
    pub header_read_timeout: Option<String>,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Option<String>,
    /// At most this many client connections at once; more wait in the
    /// kernel's accept queue.
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host name or `*.example.com`; absent: any host.
    pub host: Option<String>,
    /// Segment-aware prefix (`/admin/`), or a glob when it contains `*`.
    pub path: Option<String>,
    /// HTTP methods; absent: all. `GET` also admits `HEAD`.
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub allow_roles: Vec<String>,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// Any signed-in user.
    pub allow_any_user: Option<bool>,
    pub public: Option<bool>,
    pub max_auth_age: Option<String>,
    /// "any" (default) or "hardware".
    pub credentials: Option<String>,
    /// Accept synced (backup-eligible) passkeys. Default: true, or false
    /// when `credentials = "hardware"`.
    pub allow_synced: Option<bool>,
    /// Require user verification (PIN/biometric) at the last tap.
    pub require_uv: Option<bool>,
    /// Require this many registered keys (e.g. 2: a backup key) first.
    pub min_keys: Option<u32>,
}

/// Every key a `TAPGATE_SECTION__KEY` variable may set. Other `TAPGATE_`
/// variables are ignored with a warning (they may belong to other tools).
pub const ENV_KEYS: &[&str] = &[
    "public_url",
    "upstream",
    "listen",
    "roles",
    "session.ttl",
    "assertion.ttl",
    "assertion.audience",
    "store.url",
    "store.password_file",
    "keys.signing_key_file",
    "keys.signing_key",
    "webauthn.rp_id",
    "webauthn.rp_name",
    "webauthn.user_verification",
    "webauthn.challenge_ttl",
    "headers.iap",
    "headers.oauth2_proxy",
    "proxy.timeout",
    "proxy.connect_timeout",
    "server.header_read_timeout",
    "server.idle_timeout",
    "server.max_connections",
    "trust.builtin_roots",
    "trust.root_files",
    "trust.allowed_aaguids",
    "trust.credentials",
    "trust.allow_synced",
    "limits.enabled",
    "limits.ip_per_minute",
    "limits.ip_burst",
    "limits.account_per_minute",
    "limits.account_burst",
    "limits.max_tracked",
    "limits.trusted_proxies",
];
