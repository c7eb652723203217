//! The Bearer flow against a token server of the test's own: the registry
//! trusts the server's certificate (`rootcertbundle`), the server checks
//! Basic credentials and signs RS256 tokens with `openssl dgst`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use camino::Utf8PathBuf;
use layerstack::ErrorKind;
use layerstack::oci::registry::{self, Credentials, NoProgress, RegistryOptions};

use super::harness::{Auth, PASSWORD, TestRegistry, USER, have_program, self_signed};
use super::push_pull::{build_images, options, pull_into, reference};
use super::tools::{Scratch, run};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    if url {
        out.replace('+', "-").replace('/', "_")
    } else {
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

pub struct TokenServer {
    pub realm: String,
    pub bundle: Utf8PathBuf,
    pub issued: Arc<AtomicU32>,
}

impl TokenServer {
    pub fn start(scratch: &Scratch) -> TokenServer {
        let (key, cert, der) = (
            scratch.path("token.key"),
            scratch.path("token.pem"),
            scratch.path("token.der"),
        );
        self_signed(&key, &cert, "/CN=layerstack token issuer");
        run(Command::new("openssl").args([
            "x509",
            "-in",
            cert.as_str(),
            "-outform",
            "DER",
            "-out",
            der.as_str(),
        ]));
        let x5c = base64(&std::fs::read(&der).unwrap(), false);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicU32::new(0));
        let counter = issued.clone();
        let work = scratch.path("tokens");
        std::fs::create_dir_all(&work).unwrap();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("authorization: ") {
                        authorization = line[line.len() - v.len()..].trim().to_owned();
                    }
                }
                let want = format!(
                    "Basic {}",
                    base64(format!("{USER}:{PASSWORD}").as_bytes(), false)
                );
                if authorization != want {
                    let body = r#"{"details":"wrong credentials"}"#;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let target = first.split(' ').nth(1).unwrap_or("");
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let access: Vec<serde_json::Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(percent_decode)
                    .filter_map(|scope| {
                        let mut parts = scope.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({
                            "type": kind, "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "layerstack-test-issuer", "sub": USER, "aud": "layerstack-test",
                    "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("t{n}"),
                    "access": access,
                });
                let input = format!(
                    "{}.{}",
                    base64(header.to_string().as_bytes(), true),
                    base64(claims.to_string().as_bytes(), true)
                );
                let (data, sig) = (work.join(format!("{n}.in")), work.join(format!("{n}.sig")));
                std::fs::write(&data, &input).unwrap();
                run(Command::new("openssl").args([
                    "dgst",
                    "-sha256",
                    "-sign",
                    key.as_str(),
                    "-binary",
                    "-out",
                    sig.as_str(),
                    data.as_str(),
                ]));
                let token = format!("{input}.{}", base64(&std::fs::read(&sig).unwrap(), true));
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            bundle: cert,
            issued,
        }
    }
}

#[test]
fn bearer_tokens_from_a_token_server_per_scope() {
    let test = "bearer_tokens_from_a_token_server_per_scope";
    if !have_program("openssl", "openssl", test) {
        return;
    }
    let s = Scratch::new(test);
    let server = TokenServer::start(&s);
    let auth = Auth::Token {
        realm: server.realm.clone(),
        bundle: server.bundle.clone(),
    };
    let Some(reg) = TestRegistry::start(test, auth) else {
        return;
    };
    let (store, base, _) = build_images(&s.path("src"));
    let pushed = registry::push(
        store.layout(),
        Some("base"),
        &reference(&reg.host, "bearer:1"),
        &options(),
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(pushed.digest, base.descriptor.digest);
    // One token for `repository:bearer:pull,push`, cached for the push.
    assert_eq!(server.issued.load(Ordering::SeqCst), 1);
    let pulled = pull_into(&reg.host, "bearer:1", &s.path("pulled"), &options()).unwrap();
    assert_eq!(pulled.digest, base.descriptor.digest);
    // Another scope (pull only), another token.
    assert_eq!(server.issued.load(Ordering::SeqCst), 2);

    let wrong = RegistryOptions {
        credentials: Some(Credentials::parse(&format!("{USER}:nope")).unwrap()),
        ..options()
    };
    let err = pull_into(&reg.host, "bearer:1", &s.path("other"), &wrong).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert_eq!(
        err.to_string(),
        format!(
            "failed to authenticate to `{}`: the registry answered 401 Unauthorized",
            server.realm
        )
    );
}
