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
    pub route: Vec<RawRoute>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Option<String>,
    #[serde(default)]
    pub allow_roles: Vec<String>,
    pub public: Option<bool>,
    pub max_auth_age: Option<String>,
}
