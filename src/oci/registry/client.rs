//! The HTTP side: one registry host, its authentication, retries, the
//! registry's error JSON, and the rule about where a `Location` or a token
//! realm may point.

use std::io::Read;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use ureq::ResponseExt;
use ureq::http::Response;

use super::auth::{Challenge, Credentials, TokenCache, parse_token};
use super::{RegistryOptions, RequestCounts, Tls};
use crate::error::{Error, ErrorKind, Operation, Result};

/// The registry's answers that are documents (manifests, error JSON,
/// tokens, tag lists) are read up to this many bytes.
pub(crate) const MAX_BODY_BYTES: u64 = 4 << 20;

/// One registry: its host, how to reach it, the credentials for it and
/// the tokens it gave. Shared by the threads of one transfer.
#[derive(Debug)]
pub struct Registry {
    host: String,
    base: String,
    agent: ureq::Agent,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
    retries: u32,
    retry_delay: Duration,
    counts: [AtomicU64; 6],
}

#[derive(Debug, Default)]
struct AuthState {
    pinged: bool,
    challenge: Option<Challenge>,
    tokens: TokenCache,
}

/// The methods counted, in [`RequestCounts`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Head,
    Get,
    Put,
    Post,
    Patch,
    Delete,
}

impl Registry {
    /// A client of the registry at `host` (`name[:port]`). Plain HTTP with
    /// [`Tls::Insecure`], and for a loopback host unless [`Tls::Roots`]
    /// names the certificates to check it with; else HTTPS. Nothing is
    /// sent until the first request, which pings `/v2/` first.
    ///
    /// # Errors
    /// `EINVAL` for a host that is not `name[:port]`; `EOPNOTSUPP` for an
    /// HTTPS registry in a build without the `registry-tls` feature; a
    /// certificate file that cannot be read or parsed.
    pub fn new(host: &str, options: &RegistryOptions) -> Result<Registry> {
        check_host(host)?;
        // A loopback registry speaks plain HTTP unless roots are given for it.
        let plain = match options.tls {
            Tls::Insecure => true,
            Tls::Verify => is_loopback_host(host),
            Tls::Roots(_) => false,
        };
        let scheme = if plain { "http" } else { "https" };
        #[cfg(not(feature = "registry-tls"))]
        if !plain {
            return Err(
                Error::new(ErrorKind::Unsupported, Operation::Authenticate, host).with_detail(
                    "HTTPS needs the `registry-tls` feature (plain HTTP is for loopback registries and --insecure)",
                ),
            );
        }
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("layerstack/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(16);
        #[cfg(feature = "registry-tls")]
        let builder = builder.tls_config(tls_config(host, options)?);
        let credentials = options.credentials.clone().or_else(|| {
            let files = options
                .auth_files
                .clone()
                .unwrap_or_else(Credentials::default_auth_files);
            Credentials::from_auth_files(
                &files,
                host,
                options.repository_hint.as_deref().unwrap_or(""),
            )
        });
        Ok(Registry {
            host: host.to_owned(),
            base: format!("{scheme}://{host}"),
            agent: builder.build().new_agent(),
            credentials,
            auth: Mutex::new(AuthState::default()),
            retries: options.retries,
            retry_delay: options.retry_delay,
            counts: Default::default(),
        })
    }

    /// The registry's host (`name[:port]`).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `scheme://host`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The requests made so far, by method.
    #[must_use]
    pub fn request_counts(&self) -> RequestCounts {
        let n = |m: Method| self.counts[m as usize].load(Ordering::Relaxed);
        RequestCounts {
            head: n(Method::Head),
            get: n(Method::Get),
            put: n(Method::Put),
            post: n(Method::Post),
            patch: n(Method::Patch),
            delete: n(Method::Delete),
        }
    }

    /// `request` with the `Authorization` value, when there is one and the
    /// request goes to the registry's own host: credentials and tokens are
    /// never sent to another host (an upload session or a blob elsewhere).
    pub(crate) fn authorized<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        authorization: Option<&str>,
    ) -> ureq::RequestBuilder<B> {
        let own = request.uri_ref().is_some_and(|uri| self.is_own(uri));
        match authorization {
            Some(value) if own => request.header("Authorization", value),
            _ => request,
        }
    }

    /// Whether `uri` is on the registry itself: its scheme and its host and
    /// port. A URL on the same host over plain HTTP when the registry is
    /// HTTPS is not: credentials never go out in clear text.
    fn is_own(&self, uri: &ureq::http::Uri) -> bool {
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        uri.scheme_str() == Some(scheme)
            && uri
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&self.host))
    }

    /// `GET /v2/`: checks the registry speaks the distribution API and
    /// learns how it wants to be authenticated (its challenge).
    ///
    /// # Errors
    /// A registry that cannot be reached, or answers neither 200 nor 401.
    pub fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let mut attempt = 0;
        let response = loop {
            self.count(Method::Get);
            match self.agent.get(&url).call() {
                Ok(r) if r.status().is_server_error() && attempt < self.retries => {}
                Ok(r) => break r,
                Err(e) if retryable(&e) && attempt < self.retries => {}
                Err(e) => return Err(transport_error(Operation::Authenticate, &self.host, &e)),
            }
            attempt += 1;
            std::thread::sleep(self.retry_delay * attempt);
        };
        let challenge = match response.status().as_u16() {
            200 => None,
            401 => Some(challenge_of(&response).ok_or_else(|| {
                Error::new(ErrorKind::AccessDenied, Operation::Authenticate, &self.host)
                    .with_detail("the registry asks for an authentication scheme other than Basic and Bearer")
            })?),
            _ => {
                let mut response = response;
                return Err(status_error(Operation::Authenticate, &self.host, &mut response));
            }
        };
        let mut auth = self.lock();
        auth.pinged = true;
        auth.challenge = challenge;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A thread that panicked holding the lock left plain data.
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self, method: Method) {
        self.counts[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a request through `call` (given the `Authorization` value to
    /// set): pings first, answers one 401 by authenticating again (a new
    /// token for the scope the registry names), and retries 5xx answers
    /// and lost connections up to the configured count when `retry` says
    /// the request can be sent again. Other statuses are returned for the
    /// caller to judge.
    pub(crate) fn send(
        &self,
        method: Method,
        op: Operation,
        what: &str,
        scope: &str,
        retry: bool,
        mut call: impl FnMut(Option<&str>) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        if !self.lock().pinged {
            self.ping()?;
        }
        let mut attempt = 0;
        let mut reauthenticated = false;
        let mut scope = scope.to_owned();
        loop {
            let authorization = self.authorization(&scope, op, what)?;
            self.count(method);
            match call(authorization.as_deref()) {
                // A challenge from another host (an upload session or a
                // blob elsewhere) is not the registry's: answering it could
                // send the credentials to whoever that host names.
                Ok(mut response)
                    if response.status() == 401 && !self.is_own(response.get_uri()) =>
                {
                    return Err(status_error(op, what, &mut response));
                }
                Ok(response) if response.status() == 401 && !reauthenticated => {
                    reauthenticated = true;
                    let challenge = challenge_of(&response);
                    let mut auth = self.lock();
                    auth.tokens.remove(&scope);
                    if let Some(Challenge::Bearer {
                        scope: Some(asked), ..
                    }) = &challenge
                    {
                        // The registry says which scope it wants.
                        for part in asked.split(' ') {
                            if !scope.split(' ').any(|s| s == part) {
                                scope.push(' ');
                                scope.push_str(part);
                            }
                        }
                    }
                    if challenge.is_some() {
                        auth.challenge = challenge;
                    }
                    if auth.challenge.is_none()
                        || (matches!(auth.challenge, Some(Challenge::Basic))
                            && self.credentials.is_none())
                    {
                        drop(auth);
                        let mut response = response;
                        return Err(self.unauthorized(op, what, &mut response));
                    }
                    continue;
                }
                Ok(response) if response.status() == 401 => {
                    let mut response = response;
                    return Err(self.unauthorized(op, what, &mut response));
                }
                Ok(response)
                    if retry && response.status().is_server_error() && attempt < self.retries => {}
                Ok(response) => return Ok(response),
                Err(e) if retry && retryable(&e) && attempt < self.retries => {}
                Err(e) => return Err(transport_error(op, what, &e)),
            }
            attempt += 1;
            std::thread::sleep(self.retry_delay * attempt);
        }
    }

    fn unauthorized(
        &self,
        op: Operation,
        what: &str,
        response: &mut Response<ureq::Body>,
    ) -> Error {
        let err = status_error(op, what, response);
        if self.credentials.is_none() {
            let cause = err.cause();
            err.with_detail(format!("{cause} (no credentials for {})", self.host))
        } else {
            err
        }
    }

    /// The `Authorization` value for a request needing `scope`: Basic
    /// credentials, a cached or new Bearer token, or none.
    fn authorization(&self, scope: &str, op: Operation, what: &str) -> Result<Option<String>> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(token) = self.lock().tokens.get(scope) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token = self
                    .fetch_token(&realm, service.as_deref(), scope)
                    .map_err(|e| {
                        if e.operation() == Operation::Authenticate {
                            e
                        } else {
                            e.reframe(op, what)
                        }
                    })?;
                let value = format!("Bearer {}", token.value);
                self.lock().tokens.insert(scope, token);
                Ok(Some(value))
            }
        }
    }

    /// Asks the token server at `realm` for a token for `scope` (several
    /// scopes are separated by spaces). The credentials go with it only
    /// over HTTPS or to the registry's own host.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<super::auth::Token> {
        let realm_host = self.check_url(realm, Operation::Authenticate)?;
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        let mut param = |k: &str, v: &str| {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(v));
            sep = '&';
        };
        if let Some(service) = service {
            param("service", service);
        }
        for part in scope.split(' ').filter(|s| !s.is_empty()) {
            param("scope", part);
        }
        // Over HTTPS; or, for a registry spoken to in plain HTTP (loopback
        // or --insecure), to a token server on its own host: never from an
        // HTTPS registry down to plain HTTP.
        let send_credentials = realm.starts_with("https://")
            || (self.base.starts_with("http://")
                && split_host_port(&realm_host).0 == split_host_port(&self.host).0);
        let mut attempt = 0;
        let mut response = loop {
            let mut request = self.agent.get(&url);
            if let Some(credentials) = self.credentials.as_ref().filter(|_| send_credentials) {
                request = request.header("Authorization", credentials.basic_header());
            }
            self.count(Method::Get);
            match request.call() {
                Ok(r) if r.status().is_server_error() && attempt < self.retries => {}
                Ok(r) => break r,
                Err(e) if retryable(&e) && attempt < self.retries => {}
                Err(e) => return Err(transport_error(Operation::Authenticate, realm, &e)),
            }
            attempt += 1;
            std::thread::sleep(self.retry_delay * attempt);
        };
        if response.status() != 200 {
            return Err(status_error(Operation::Authenticate, realm, &mut response));
        }
        let body = read_body(&mut response, Operation::Authenticate, realm)?;
        parse_token(&body, realm)
    }

    /// Resolves a `Location` the registry sent (absolute, or a path on the
    /// registry) into a URL; refuses one on another host that is a
    /// private or loopback address.
    pub(crate) fn resolve_location(&self, location: &str, op: Operation) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            self.check_url(location, op)?;
            Ok(location.to_owned())
        } else if location.starts_with('/') {
            Ok(format!("{}{location}", self.base))
        } else {
            Err(
                Error::new(ErrorKind::InvalidData, op, escape(location)).with_detail(
                    "the registry sent a Location that is neither a URL nor an absolute path",
                ),
            )
        }
    }

    /// The host of an absolute `url`; refuses another host on a private,
    /// loopback or link-local address (a registry must not make us reach
    /// into our own network), or one that does not resolve.
    fn check_url(&self, url: &str, op: Operation) -> Result<String> {
        let refuse = |detail: &str| {
            Error::new(ErrorKind::NotPermitted, op, escape(url)).with_detail(detail.to_owned())
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| refuse("not an http(s) URL"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(refuse("a URL with user information is not followed"));
        }
        let (name, port) = split_host_port(authority);
        // The registry's own host, on any port (a token server beside it).
        if name.eq_ignore_ascii_case(split_host_port(&self.host).0) {
            return Ok(authority.to_owned());
        }
        let port = port.unwrap_or(if url.starts_with("https") { 443 } else { 80 });
        let addresses: Vec<IpAddr> = (name, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(ErrorKind::NotFound, op, escape(url))
                    .with_detail(format!("cannot resolve `{}`: {e}", escape(name)))
            })?
            .map(|a| a.ip())
            .collect();
        if addresses.is_empty() || addresses.iter().any(|ip| is_internal(*ip)) {
            return Err(refuse(
                "it points to another host on a private or loopback address",
            ));
        }
        Ok(authority.to_owned())
    }
}

#[cfg(feature = "registry-tls")]
fn tls_config(host: &str, options: &RegistryOptions) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{RootCerts, TlsConfig};
    let builder = TlsConfig::builder();
    match &options.tls {
        Tls::Verify => Ok(builder.build()),
        Tls::Insecure => Ok(builder.build()),
        Tls::Roots(file) => {
            let bytes = std::fs::read(file)
                .map_err(|e| Error::from_io(&e, Operation::Authenticate, file))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&bytes) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::new(
                            ErrorKind::InvalidData,
                            Operation::Authenticate,
                            file,
                        )
                        .with_detail(format!("not PEM certificates: {e}")));
                    }
                }
            }
            if certs.is_empty() {
                return Err(
                    Error::new(ErrorKind::InvalidData, Operation::Authenticate, file)
                        .with_detail(format!("holds no PEM certificate to trust for {host}")),
                );
            }
            Ok(builder
                .root_certs(RootCerts::new_with_certs(&certs))
                .build())
        }
    }
}

/// Reads a document-sized body.
pub(crate) fn read_body(
    response: &mut Response<ureq::Body>,
    op: Operation,
    what: &str,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Error::from_io(&e, op, what).with_detail(format!("reading the answer: {e}"))
        })?;
    if bytes.len() as u64 > MAX_BODY_BYTES {
        return Err(Error::new(ErrorKind::LimitExceeded, op, what)
            .with_detail(format!("the answer is larger than {MAX_BODY_BYTES} bytes")));
    }
    Ok(bytes)
}

/// A header's value, if it is there and is text.
pub(crate) fn header<'a>(response: &'a Response<ureq::Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn challenge_of(response: &Response<ureq::Body>) -> Option<Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(Challenge::parse)
}

/// The error for a status the caller did not expect: the registry's error
/// JSON (`{"errors":[{"code","message"}]}`) when there is one.
pub(crate) fn status_error(
    op: Operation,
    what: &str,
    response: &mut Response<ureq::Body>,
) -> Error {
    let status = response.status().as_u16();
    let kind = match status {
        401 | 403 => ErrorKind::AccessDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::AlreadyExists,
        413 => ErrorKind::FileTooLarge,
        416 => ErrorKind::OutOfRange,
        429 => ErrorKind::Busy,
        400..=499 => ErrorKind::InvalidInput,
        _ => ErrorKind::Io,
    };
    let mut body = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(64 << 10)
        .read_to_end(&mut body);
    let mut messages = Vec::new();
    if let Ok(json) = serde_json::from_slice::<Value>(&body)
        && let Some(errors) = json.get("errors").and_then(Value::as_array)
    {
        for e in errors.iter().take(3) {
            let code = e.get("code").and_then(Value::as_str).unwrap_or("UNKNOWN");
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            messages.push(format!("{}: {}", escape(code), escape(message)));
        }
    }
    let reason = response.status().canonical_reason().unwrap_or("");
    let detail = if messages.is_empty() {
        format!("the registry answered {status} {reason}")
    } else {
        format!(
            "the registry answered {status} {reason}: {}",
            messages.join("; ")
        )
    };
    Error::new(kind, op, what).with_detail(detail)
}

/// Transport failures worth another try: lost or refused connections,
/// timeouts.
pub(crate) fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed
    )
}

pub(crate) fn transport_error(op: Operation, what: &str, e: &ureq::Error) -> Error {
    let kind = match e {
        ureq::Error::HostNotFound => ErrorKind::NotFound,
        ureq::Error::BodyExceedsLimit(_) => ErrorKind::LimitExceeded,
        _ => ErrorKind::Io,
    };
    Error::new(kind, op, what).with_detail(escape(&e.to_string()))
}

/// Text from the network, made safe for one line on a terminal and short.
pub(crate) fn escape(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name[:port]`, `[v6]:port`: the name and the port.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((name, after)) = rest.split_once(']')
    {
        return (name, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (authority, None),
    }
}

/// A registry host must be `name[:port]`: DNS name or IP address, no
/// path, no user information.
fn check_host(host: &str) -> Result<()> {
    let (name, _) = split_host_port(host);
    let valid_name = !name.is_empty()
        && (name.parse::<IpAddr>().is_ok()
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok = match host.rsplit_once(':') {
        Some((_, p)) if !host.ends_with(']') && host.starts_with('[') == host.contains("]:") => {
            p.parse::<u16>().is_ok()
        }
        _ => true,
    };
    if valid_name && port_ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            Operation::Authenticate,
            escape(host),
        )
        .with_detail("a registry is HOST[:PORT]"))
    }
}

/// `localhost`, `127.0.0.0/8`, `::1`: plain HTTP is allowed there, as
/// Docker allows it.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let (name, _) = split_host_port(host);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Loopback, private (RFC 1918, unique local), link-local, shared
/// (100.64/10) and unspecified addresses.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // "this network" (0.0.0.0/8) and shared address space.
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let o = v6.octets();
            let embedded = |a: u8, b: u8, c: u8, d: u8| {
                is_internal(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                // Link-local, and the deprecated site-local fec0::/10.
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                // IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 6to4
                // 2002::/16 carry an IPv4 address that is judged as one.
                || (seg[..6] == [0; 6] && embedded(o[12], o[13], o[14], o[15]))
                || (seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(o[12], o[13], o[14], o[15]))
                || (seg[0] == 0x2002 && embedded(o[2], o[3], o[4], o[5]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "fec0::1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:c0a8:0101::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn hosts_split_and_check() {
        assert_eq!(
            split_host_port("reg.example:5000"),
            ("reg.example", Some(5000))
        );
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some(5000)));
        assert_eq!(split_host_port("reg.example"), ("reg.example", None));
        assert!(check_host("127.0.0.1:5000").is_ok());
        assert!(check_host("reg.example").is_ok());
        assert!(check_host("reg.example:x").is_err());
        assert!(check_host("user@reg.example").is_err());
        assert!(check_host("").is_err());
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("127.0.0.2:1"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }

    #[test]
    fn locations_to_internal_hosts_are_refused_unless_the_registry_is_there() {
        let registry = Registry::new("127.0.0.1:5000", &RegistryOptions::default()).unwrap();
        assert_eq!(
            registry
                .resolve_location("/v2/a/blobs/uploads/1?_state=x", Operation::Push)
                .unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/1?_state=x"
        );
        assert!(
            registry
                .resolve_location("http://127.0.0.1:5000/v2/x", Operation::Push)
                .is_ok()
        );
        // The same machine on another port: a token server beside it.
        assert!(
            registry
                .resolve_location("http://127.0.0.1:6000/token", Operation::Push)
                .is_ok()
        );
        let err = registry
            .resolve_location("http://127.0.0.2:5000/v2/x", Operation::Push)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotPermitted);
        assert_eq!(
            err.to_string(),
            "failed to push `http://127.0.0.2:5000/v2/x`: it points to another host on a private or loopback address"
        );
        assert!(
            registry
                .resolve_location("http://10.0.0.7/upload", Operation::Push)
                .is_err()
        );
        assert!(
            registry
                .resolve_location("relative", Operation::Push)
                .is_err()
        );
    }

    #[test]
    fn credentials_go_to_the_registry_host_only() {
        let registry = Registry::new("127.0.0.1:5000", &RegistryOptions::default()).unwrap();
        let header = |url: &str| {
            let request = registry.authorized(registry.agent().get(url), Some("Basic eA=="));
            request
                .headers_ref()
                .and_then(|h| h.get("authorization"))
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header("http://127.0.0.1:5000/v2/a/blobs/sha256:00").as_deref(),
            Some("Basic eA==")
        );
        assert_eq!(header("http://127.0.0.1:6000/v2/a/blobs/sha256:00"), None);
        assert_eq!(header("https://storage.example/blob?sig=x"), None);
    }

    #[test]
    fn percent_encoding_keeps_unreserved() {
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
