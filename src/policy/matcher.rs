//! The three things a rule matches on — host, path, method — parsed once
//! from the configuration, matched per request without allocating.

use std::fmt;

/// `app.example.com` (exact) or `*.example.com` (any sub-domain, one or
/// more labels deep, not the apex). Compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "{s:?} is not a host name like app.example.com or *.example.com (no port, no scheme)"
            ));
        }
        Ok(if wild {
            HostPattern::Subdomains(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// `host` without port, as sent by the client.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Does every host this pattern matches also match `other`?
    pub fn within(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), _) => other.matches(a),
            (HostPattern::Subdomains(a), HostPattern::Subdomains(b)) => a.ends_with(b.as_str()),
            (HostPattern::Subdomains(_), HostPattern::Exact(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

/// A path rule: a segment-aware prefix (`/admin/` matches `/admin` and
/// `/admin/x`, never `/administrator`), or a glob where `*` matches within
/// one segment and `**` across segments (`/api/*/deploy`, `/static/**`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    Prefix { text: String, exact: String },
    Glob(String),
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} must start with '/'"));
        }
        if s.contains("//") || s.split('/').any(|seg| seg == "." || seg == "..") || s.contains('\\')
        {
            return Err(format!(
                "{s:?} must not contain '//', '.' or '..' segments or backslashes"
            ));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(format!(
                "{s:?} must be a plain path (no spaces, '?' or '#')"
            ));
        }
        if !s.contains('*') {
            return Ok(PathPattern::Prefix {
                text: s.to_owned(),
                exact: s.trim_end_matches('/').to_owned(),
            });
        }
        for seg in s.split('/') {
            if seg.contains("**") && seg != "**" {
                return Err(format!(
                    "{s:?}: '**' must be a whole segment, as in /static/**"
                ));
            }
            if seg.contains("***") {
                return Err(format!("{s:?}: use '*' or '**', not '***'"));
            }
        }
        Ok(PathPattern::Glob(s.to_owned()))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Prefix { exact, .. } => {
                exact.is_empty()
                    || path == exact
                    || path
                        .strip_prefix(exact.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            PathPattern::Glob(g) => glob_match(g.as_bytes(), path.as_bytes()),
        }
    }

    /// Does every path this pattern matches also match `other`? Exact for
    /// prefix-in-prefix and literal-in-glob; `false` when unsure.
    pub fn within(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (_, PathPattern::Prefix { exact, .. }) if exact.is_empty() => true,
            (_, PathPattern::Glob(g)) if g == "/**" => true,
            (PathPattern::Prefix { exact: a, .. }, PathPattern::Prefix { .. }) => {
                other.matches(a) && (a.is_empty() || other.matches(&format!("{a}/")))
            }
            (PathPattern::Glob(a), PathPattern::Prefix { exact: b, .. }) => {
                // A glob whose literal head already lies inside the prefix.
                let head: &str = a.split('*').next().unwrap_or("");
                let head = &head[..head.rfind('/').unwrap_or(0)];
                !b.is_empty() && (head == b || head.starts_with(&format!("{b}/")))
            }
            (PathPattern::Glob(a), PathPattern::Glob(b)) => a == b,
            (PathPattern::Prefix { .. }, PathPattern::Glob(_)) => false,
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Prefix { text, .. } => f.write_str(text),
            PathPattern::Glob(g) => f.write_str(g),
        }
    }
}

/// `*` = any run of bytes except '/', `**` = any run of bytes. Iterative
/// with one backtrack point per kind of star: no recursion, no allocation.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*` / `**`: (pattern index after the
    // star, text index the star has consumed up to).
    let mut single: Option<(usize, usize)> = None;
    let mut double: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            if p + 1 < pat.len() && pat[p + 1] == b'*' {
                double = Some((p + 2, t));
                single = None;
                p += 2;
            } else {
                single = Some((p + 1, t));
                p += 1;
            }
            continue;
        }
        if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
            continue;
        }
        // Let the innermost star eat one more byte, if it may.
        if let Some((sp, st)) = single
            && text[st] != b'/'
        {
            single = Some((sp, st + 1));
            p = sp;
            t = st + 1;
            continue;
        }
        if let Some((dp, dt)) = double {
            single = None;
            double = Some((dp, dt + 1));
            p = dp;
            t = dt + 1;
            continue;
        }
        return false;
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// A set of HTTP methods as a bit set; `GET` implies `HEAD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Methods(u16);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

impl Methods {
    pub const ALL: Methods = Methods(0x1ff);

    pub fn parse(list: &[String]) -> Result<Methods, String> {
        let mut bits = 0u16;
        for m in list {
            let upper = m.to_ascii_uppercase();
            let i = METHODS.iter().position(|k| *k == upper).ok_or_else(|| {
                format!("{m:?} is not an HTTP method (use {})", METHODS.join(", "))
            })?;
            bits |= 1 << i;
            if upper == "GET" {
                bits |= 1 << 1;
            }
        }
        if bits == 0 {
            return Err(
                "an empty list matches nothing: remove `methods` to match every method".into(),
            );
        }
        Ok(Methods(bits))
    }

    pub fn contains(self, method: &http::Method) -> bool {
        match METHODS.iter().position(|k| *k == method.as_str()) {
            Some(i) => self.0 & (1 << i) != 0,
            // Extension methods only match rules without a method list.
            None => self == Methods::ALL,
        }
    }

    pub fn within(self, other: Methods) -> bool {
        other == Methods::ALL || (self != Methods::ALL && self.0 & !other.0 == 0)
    }
}

impl fmt::Display for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Methods::ALL {
            return f.write_str("any method");
        }
        let names: Vec<&str> = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("/api/*/deploy", "/api/prod/deploy", true),
            ("/api/*/deploy", "/api/a/b/deploy", false),
            ("/api/*/deploy", "/api//deploy", true),
            ("/static/**", "/static/a/b/c.css", true),
            ("/static/**", "/static", false),
            ("/**/*.css", "/a/b/c.css", true),
            ("/**/*.css", "/a/b/c.js", false),
            ("/*.png", "/logo.png", true),
            ("/*.png", "/img/logo.png", false),
            ("/a*b*c", "/axxbyyc", true),
            ("/a*b*c", "/axxbyy", false),
        ];
        for (pat, path, want) in cases {
            assert_eq!(
                PathPattern::parse(pat).unwrap().matches(path),
                want,
                "{pat} ~ {path}"
            );
        }
        for bad in [
            "static/**",
            "/a**",
            "/a/***",
            "/a/../b",
            "//x",
            "/a b",
            "/a?x",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_segment_aware() {
        let p = PathPattern::parse("/admin/").unwrap();
        assert!(p.matches("/admin"));
        assert!(p.matches("/admin/x"));
        assert!(!p.matches("/administrator"));
        assert!(PathPattern::parse("/").unwrap().matches("/anything"));
    }

    #[test]
    fn path_containment() {
        let within = |a: &str, b: &str| {
            PathPattern::parse(a)
                .unwrap()
                .within(&PathPattern::parse(b).unwrap())
        };
        assert!(within("/admin/deploy", "/admin"));
        assert!(within("/admin", "/admin/"));
        assert!(within("/x", "/"));
        assert!(within("/admin/*/x", "/admin"));
        assert!(within("/anything/**", "/**"));
        assert!(!within("/admin", "/admin/deploy"));
        assert!(!within("/administrator", "/admin"));
        assert!(!within("/api/*", "/api/x"));
    }

    #[test]
    fn hosts() {
        let h = HostPattern::parse("*.Example.com").unwrap();
        assert!(h.matches("a.example.com"));
        assert!(h.matches("A.B.EXAMPLE.COM"));
        assert!(!h.matches("example.com"));
        assert!(!h.matches("badexample.com"));
        assert!(HostPattern::parse("app.example.com").unwrap().within(&h));
        assert!(!h.within(&HostPattern::parse("app.example.com").unwrap()));
        for bad in ["", "https://x", "x:80", "a..b", "*.", "-a.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods() {
        let m = Methods::parse(&["get".into(), "POST".into()]).unwrap();
        assert!(m.contains(&http::Method::HEAD));
        assert!(m.contains(&http::Method::POST));
        assert!(!m.contains(&http::Method::DELETE));
        assert!(!m.contains(&http::Method::from_bytes(b"PURGE").unwrap()));
        assert!(Methods::ALL.contains(&http::Method::from_bytes(b"PURGE").unwrap()));
        assert!(Methods::parse(&["FETCH".into()]).is_err());
        assert!(m.within(Methods::ALL));
        assert!(!Methods::ALL.within(m));
        assert_eq!(m.to_string(), "GET,HEAD,POST");
    }
}
