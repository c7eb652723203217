//! Authentication: the `WWW-Authenticate` challenge of a registry, the
//! credentials for it (given, or from `auth.json` / `~/.docker/config.json`)
//! and the Bearer tokens a token server hands out, cached per scope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Operation, Result};

/// A user name and a password (or an identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from `USER:PASSWORD` (the password may hold `:`).
    ///
    /// # Errors
    /// `EINVAL` when there is no `:`.
    pub fn parse(user_colon_password: &str) -> Result<Credentials> {
        match user_colon_password.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                username: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                Operation::Authenticate,
                "credentials",
            )
            .with_detail("expected USER:PASSWORD")),
        }
    }

    /// The value of an `Authorization: Basic` header.
    pub(crate) fn basic_header(&self) -> String {
        let plain = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64_encode(plain.as_bytes()))
    }

    /// Looks up the credentials for `host` (and `repository`, for files
    /// that hold per-repository entries) in the auth files, in the order
    /// given: the first file with a matching entry wins; within a file, the
    /// longest matching key (`host/namespace` before `host`).
    ///
    /// Missing or unreadable files are skipped. Entries that name a
    /// credential helper (`credsStore`, `credHelpers`) are not run.
    #[must_use]
    pub fn from_auth_files(
        files: &[Utf8PathBuf],
        host: &str,
        repository: &str,
    ) -> Option<Credentials> {
        files
            .iter()
            .find_map(|file| lookup_auth_file(file, host, repository))
    }

    /// The auth files containers tools and Docker read, in the order
    /// containers/image reads them: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// `~/.config/containers/auth.json`, then Docker's
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    #[must_use]
    pub fn default_auth_files() -> Vec<Utf8PathBuf> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Utf8PathBuf::from)
        };
        let mut files = Vec::new();
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            files.push(file);
        }
        if let Some(dir) = var("XDG_RUNTIME_DIR") {
            files.push(dir.join("containers/auth.json"));
        }
        let home = var("HOME");
        if let Some(home) = &home {
            files.push(home.join(".config/containers/auth.json"));
        }
        match var("DOCKER_CONFIG") {
            Some(dir) => files.push(dir.join("config.json")),
            None => {
                if let Some(home) = &home {
                    files.push(home.join(".docker/config.json"));
                }
            }
        }
        files
    }
}

/// Auth files are small; more is not one.
const MAX_AUTH_FILE_BYTES: u64 = 1 << 20;

fn lookup_auth_file(file: &Utf8Path, host: &str, repository: &str) -> Option<Credentials> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(MAX_AUTH_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let json: Value = serde_json::from_slice(&bytes).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let full = format!("{host}/{repository}");
    let mut best: Option<(usize, &Value)> = None;
    for (key, entry) in auths {
        let key = normalize_auth_key(key);
        let matches = key == host || (full.starts_with(&key) && full[key.len()..].starts_with('/'));
        if matches && best.is_none_or(|(len, _)| key.len() > len) {
            best = Some((key.len(), entry));
        }
    }
    let entry = best?.1;
    if let Some(auth) = entry.get("auth").and_then(Value::as_str)
        && !auth.is_empty()
    {
        let decoded = String::from_utf8(base64_decode(auth)?).ok()?;
        return Credentials::parse(&decoded).ok();
    }
    let username = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// `https://host/v1/` → `host`: Docker writes keys with a scheme and a
/// path; containers tools write `host[/namespace]`.
fn normalize_auth_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    key.to_owned()
}

/// How a registry asks to be authenticated (`WWW-Authenticate` of a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: user and password with every request.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`: a token from the
    /// token server at `realm`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The scope the failed request needed, if the registry said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses one `WWW-Authenticate` header value; `None` for schemes
    /// other than Basic and Bearer, or a Bearer without a realm.
    #[must_use]
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `k1="v1",k2=v2`: quoted strings may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

/// A Bearer token and when it stops being good.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) expires: Instant,
}

/// Tokens by scope; a token within a few seconds of its expiry counts as
/// expired, so a request never starts with one about to run out.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<String, Token>,
}

/// Tokens are refreshed this long before the server's expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// The distribution spec's default `expires_in`: 60 seconds.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);

impl TokenCache {
    pub(crate) fn get(&self, scope: &str) -> Option<&str> {
        self.tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now() + EXPIRY_MARGIN)
            .map(|t| t.value.as_str())
    }

    pub(crate) fn insert(&mut self, scope: &str, token: Token) {
        self.tokens.insert(scope.to_owned(), token);
    }

    pub(crate) fn remove(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

/// Reads a token server's answer: `token` or `access_token`, and
/// `expires_in` (seconds, default 60).
pub(crate) fn parse_token(body: &[u8], realm: &str) -> Result<Token> {
    let bad = |detail: &str| {
        Error::new(ErrorKind::InvalidData, Operation::Authenticate, realm).with_detail(detail)
    };
    let json: Value =
        serde_json::from_slice(body).map_err(|_| bad("the token server's answer is not JSON"))?;
    let value = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("the token server's answer holds no token"))?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the token holds bytes a header cannot carry"));
    }
    let expires_in = json
        .get("expires_in")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        // A day at most: a token server cannot make the deadline overflow.
        .map_or(DEFAULT_EXPIRY, |s| {
            Duration::from_secs(s.min(MAX_EXPIRY_SECS))
        });
    Ok(Token {
        value: value.to_owned(),
        expires: Instant::now() + expires_in,
    })
}

/// The longest a token is trusted, whatever its server says.
const MAX_EXPIRY_SECS: u64 = 24 * 60 * 60;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as Basic auth uses.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on a bad digit.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = BASE64.iter().position(|&d| d == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64_decode("a!b"), None);
    }

    #[test]
    fn challenges_parse_with_quoted_commas() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".to_owned(),
                service: Some("reg".to_owned()),
                scope: Some("repository:a/b:pull,push".to_owned()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn auth_keys_match_host_and_longest_namespace() {
        let dir = std::env::temp_dir().join(format!("layerstack-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Utf8PathBuf::from_path_buf(dir.join("auth.json")).unwrap();
        std::fs::write(
            &file,
            format!(
                r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{}"}},"reg.example:5000/team":{{"username":"t","password":"p:q"}}}}}}"#,
                base64_encode(b"u:pw")
            ),
        )
        .unwrap();
        let files = [file];
        let found = |repo: &str| Credentials::from_auth_files(&files, "reg.example:5000", repo);
        assert_eq!(
            found("other/app"),
            Some(Credentials::parse("u:pw").unwrap())
        );
        assert_eq!(
            found("team/app"),
            Some(Credentials::parse("t:p:q").unwrap())
        );
        assert_eq!(
            found("teams/app"),
            Some(Credentials::parse("u:pw").unwrap())
        );
        assert_eq!(
            Credentials::from_auth_files(&files, "reg.example", "team/app"),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials::parse("me:secret").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic_header(), "Basic bWU6c2VjcmV0");
    }

    #[test]
    fn a_token_server_cannot_make_the_expiry_overflow() {
        let before = Instant::now();
        let token = parse_token(
            br#"{"token":"abc","expires_in":18446744073709551615}"#,
            "https://auth.example/token",
        )
        .unwrap();
        assert_eq!(token.value, "abc");
        assert!(token.expires >= before + Duration::from_secs(MAX_EXPIRY_SECS));
        assert!(token.expires <= Instant::now() + Duration::from_secs(MAX_EXPIRY_SECS));
    }
}
