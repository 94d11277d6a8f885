//! Who may call the gateway, and from where: the tokens and the roles they map to, the Host
//! allow-list, and the same-origin rule for requests that change something. Pure logic; the
//! middleware in main.rs applies it.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Tokens are at least this long: generated ones are 64 hex digits.
pub const MIN_TOKEN_LEN: usize = 32;

/// The configured credentials: each token's SHA-256 digest and the database role it maps to.
/// The tokens themselves are not kept, so neither a log line nor a debug print can show one.
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

fn token_char(c: char) -> bool {
    // Base64 (either alphabet) and hex: safe in a header and in a cookie value.
    c.is_ascii_alphanumeric() || "-._~+/=".contains(c)
}

impl Tokens {
    /// Reads `ROLE TOKEN` lines; blank lines and lines starting with `#` are skipped. `source`
    /// names where the text came from, for the error message (which never quotes a token).
    pub fn parse(text: &str, source: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("{source} line {}: expected \"ROLE TOKEN\"", n + 1));
            };
            if token.len() < MIN_TOKEN_LEN || !token.chars().all(token_char) {
                return Err(format!(
                    "{source} line {}: the token of role \"{role}\" must be at least {MIN_TOKEN_LEN} characters of \
                     A-Z a-z 0-9 - . _ ~ + / =",
                    n + 1
                ));
            }
            out.push((role.to_string(), token.to_string()));
        }
        Ok(out)
    }

    pub fn new(pairs: &[(String, String)]) -> Result<Tokens, String> {
        let mut entries: Vec<([u8; 32], String)> = Vec::new();
        for (role, token) in pairs {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!("the same token is given twice (the second time for role \"{role}\")"));
            }
            entries.push((digest, role.clone()));
        }
        Ok(Tokens { entries })
    }

    /// The role a token maps to. Digests are compared in constant time and every entry is
    /// compared, so the time taken says nothing about how much of a token was right.
    pub fn role_for(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (d, role) in &self.entries {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(role.as_str());
            }
        }
        found
    }

    pub fn roles(&self) -> Vec<&str> {
        let mut roles: Vec<&str> = self.entries.iter().map(|(_, r)| r.as_str()).collect();
        roles.sort();
        roles.dedup();
        roles
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `Authorization: Bearer TOKEN` -> TOKEN (the scheme is case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The name of the cookie that carries a browser's token.
pub const COOKIE: &str = "ab_gateway_token";

/// The token in a `Cookie` header, if any.
pub fn cookie_token(header: &str) -> Option<&str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v)
}

/// Splits `host[:port]` (an IPv6 host in brackets) into host and port.
fn split_port(s: &str) -> (&str, Option<&str>) {
    match s.rfind(':') {
        Some(i) if !s[i..].contains(']') && (s.starts_with('[') || s[..i].find(':').is_none()) => {
            (&s[..i], Some(&s[i + 1..]))
        }
        _ => (s, None),
    }
}

/// Whether a request's Host is one the gateway answers to: an entry with a port must match
/// exactly, an entry without one matches the host on any port. Case-insensitive.
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let (name, port) = split_port(&host);
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match split_port(&a) {
            (_, Some(_)) => a == host,
            (entry, None) => entry == name,
        }
    })
}

/// The allow-list when none is configured: the address the gateway is bound to and, on a
/// loopback address, the names of loopback with that port.
pub fn default_hosts(addr: std::net::SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = Vec::new();
    if !addr.ip().is_unspecified() {
        hosts.push(addr.to_string());
    }
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        for h in ["localhost", "127.0.0.1", "[::1]"] {
            let h = format!("{h}:{port}");
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    hosts
}

/// Whether `origin` is the origin of a page served by this gateway under `host` (the request's
/// Host, already allowed).
pub fn same_origin(origin: &str, host: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host.as_str())
}

/// A role name as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "0123456789abcdef0123456789abcdef";
    const T2: &str = "ffffffffffffffffffffffffffffffff";

    #[test]
    fn tokens_map_to_their_roles() {
        let pairs = Tokens::parse(&format!("# comment\n\napp {T1}\n  analyst   {T2}  \n"), "f").unwrap();
        let tokens = Tokens::new(&pairs).unwrap();
        assert_eq!(tokens.role_for(T1), Some("app"));
        assert_eq!(tokens.role_for(T2), Some("analyst"));
        assert_eq!(tokens.role_for(&T1[..31]), None);
        assert_eq!(tokens.role_for(&format!("{T1}0")), None);
        assert_eq!(tokens.role_for(""), None);
        assert_eq!(tokens.roles(), vec!["analyst", "app"]);
    }

    #[test]
    fn bad_token_lines_are_refused_without_quoting_the_token() {
        let e = Tokens::parse("app short", "tokens.txt").unwrap_err();
        assert!(e.contains("tokens.txt line 1") && e.contains("at least 32") && !e.contains("short"), "{e}");
        assert!(Tokens::parse(&format!("app {T1} extra"), "f").unwrap_err().contains("expected \"ROLE TOKEN\""));
        assert!(Tokens::parse("app", "f").is_err());
        assert!(Tokens::parse(&format!("app {T1};x=1"), "f").is_err());
        let twice = Tokens::parse(&format!("app {T1}\nadmin {T1}"), "f").unwrap();
        assert!(Tokens::new(&twice).err().unwrap().contains("twice"));
    }

    #[test]
    fn bearer_and_cookie() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(cookie_token("a=1; ab_gateway_token=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_token("ab_gateway_tokenx=xyz"), None);
    }

    #[test]
    fn hosts_match_exactly_or_on_any_port() {
        let allowed =
            vec!["127.0.0.1:8000".to_string(), "LocalHost:8000".into(), "[::1]:8000".into(), "ab.internal".into()];
        assert!(host_allowed(&allowed, "127.0.0.1:8000"));
        assert!(host_allowed(&allowed, "localhost:8000"));
        assert!(host_allowed(&allowed, "[::1]:8000"));
        assert!(host_allowed(&allowed, "ab.internal"));
        assert!(host_allowed(&allowed, "ab.internal:443"));
        assert!(!host_allowed(&allowed, "127.0.0.1:8001"));
        assert!(!host_allowed(&allowed, "127.0.0.1"));
        assert!(!host_allowed(&allowed, "evil.example:8000"));
        assert!(!host_allowed(&allowed, "ab.internal.evil.example"));
        assert!(!host_allowed(&allowed, "ab.internal:x"));
        assert!(!host_allowed(&allowed, ""));
    }

    #[test]
    fn default_hosts_follow_the_bound_address() {
        let loopback = default_hosts("127.0.0.1:8000".parse().unwrap());
        assert_eq!(loopback, vec!["127.0.0.1:8000", "localhost:8000", "[::1]:8000"]);
        let public = default_hosts("10.1.2.3:80".parse().unwrap());
        assert_eq!(public, vec!["10.1.2.3:80"]);
        let any = default_hosts("0.0.0.0:80".parse().unwrap());
        assert_eq!(any, vec!["localhost:80", "127.0.0.1:80", "[::1]:80"]);
    }

    #[test]
    fn only_the_gateway_s_own_origin_is_same_origin() {
        assert!(same_origin("http://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(same_origin("https://ab.internal", "AB.internal"));
        assert!(!same_origin("http://127.0.0.1:9000", "127.0.0.1:8000"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8000"));
        assert!(!same_origin("null", "127.0.0.1:8000"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
