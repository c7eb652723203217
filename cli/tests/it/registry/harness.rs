//! A real registry per test: Debian's `docker-registry` started as a child
//! on a free 127.0.0.1 port, with its storage in a scratch directory, our
//! own config file (never the package's: it listens on all interfaces),
//! `http.secret` set and htpasswd auth; killed by its pid when dropped.
//! And a byte-counting TCP proxy that can cut a connection or answer 503.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;

use super::tools::{Scratch, run};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-pw";

/// How the registry authenticates.
pub enum Auth {
    /// htpasswd (bcrypt, `htpasswd -B`) with [`USER`] / [`PASSWORD`].
    Htpasswd,
    /// Token auth: the realm, and the PEM bundle the tokens chain to.
    Token { realm: String, bundle: Utf8PathBuf },
}

pub struct TestRegistry {
    child: Child,
    pub host: String,
    pub scratch: Scratch,
}

/// A free port on 127.0.0.1 (bound, then released for the child).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl TestRegistry {
    /// Starts a registry; `None` (after printing why) when the packages are
    /// missing and `LAYERSTACK_REQUIRE_TOOLS` is not set.
    pub fn start(test: &str, auth: Auth) -> Option<TestRegistry> {
        TestRegistry::start_with(test, auth, None)
    }

    /// With `tls`: the certificate and key files it serves HTTPS with.
    pub fn start_with(
        test: &str,
        auth: Auth,
        tls: Option<(Utf8PathBuf, Utf8PathBuf)>,
    ) -> Option<TestRegistry> {
        if !have_registry(test) {
            return None;
        }
        let scratch = Scratch::new(&format!("registry-{test}"));
        let auth_yaml = match auth {
            Auth::Htpasswd => {
                if !have_program("htpasswd", "apache2-utils", test) {
                    return None;
                }
                let htpasswd = scratch.path("htpasswd");
                let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(&htpasswd, line).unwrap();
                format!("  htpasswd:\n    realm: layerstack-test\n    path: {htpasswd}\n")
            }
            Auth::Token { realm, bundle } => format!(
                "  token:\n    realm: {realm}\n    service: layerstack-test\n    issuer: layerstack-test-issuer\n    rootcertbundle: {bundle}\n"
            ),
        };
        let tls_yaml = tls.map_or(String::new(), |(cert, key)| {
            format!("  tls:\n    certificate: {cert}\n    key: {key}\n")
        });
        let port = free_port();
        let storage = scratch.path("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = scratch.path("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: layerstack-test-secret\n{tls_yaml}auth:\n{auth_yaml}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(scratch.path("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(config.as_str())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = TestRegistry {
            child,
            host: format!("127.0.0.1:{port}"),
            scratch,
        };
        registry.wait_ready();
        Some(registry)
    }

    /// Polls `/v2/` until the registry answers (any status).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = TcpStream::connect(&self.host) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                // With TLS the plain request gets a TLS alert or a 400: an
                // answer all the same.
                let _ = write!(
                    stream,
                    "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.host
                );
                let mut first = [0u8; 4];
                if stream.read(&mut first).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {} within 20 s; its log:\n{}",
                self.host,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("registry.log")).unwrap_or_default()
    }

    /// The registry's storage directory (`docker/registry/v2/...` below).
    pub fn storage(&self) -> Utf8PathBuf {
        self.scratch.path("storage")
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, hex: &str) -> Utf8PathBuf {
        self.storage().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// The digest a tag's `current/link` holds.
    pub fn tag_link(&self, repository: &str, tag: &str) -> String {
        std::fs::read_to_string(self.storage().join(format!(
            "docker/registry/v2/repositories/{repository}/_manifests/tags/{tag}/current/link"
        )))
        .unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // By its pid: this child only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate (a CA) and its key, made by `openssl`.
pub fn self_signed(key: &camino::Utf8Path, cert: &camino::Utf8Path, subject: &str) {
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        subject,
        "-keyout",
        key.as_str(),
        "-out",
        cert.as_str(),
    ]));
}

fn have_registry(test: &str) -> bool {
    have_program("docker-registry", "docker-registry", test)
}

/// Whether `program` is on the PATH (some, like `htpasswd` and
/// `openssl`, have no `--version`); prints why not. With
/// `LAYERSTACK_REQUIRE_TOOLS` set (CI), a missing one fails the test.
pub fn have_program(program: &str, package: &str, test: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let ok = std::env::split_paths(&path).any(|dir| dir.join(program).is_file());
    if !ok {
        assert!(
            std::env::var_os("LAYERSTACK_REQUIRE_TOOLS").is_none(),
            "{test} needs `{program}` and LAYERSTACK_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIP {test}: `{program}` is not installed (apt-get install {package})");
    }
    ok
}

/// A TCP proxy in front of the registry that counts the bytes each way,
/// and can cut one connection after some bytes from the registry, or
/// answer the first connections with a 503.
pub struct Proxy {
    pub host: String,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    /// Cut the first connection that carries more than this many bytes
    /// from the registry (0: never); set back to 0 once done.
    pub cut_after: Arc<AtomicU64>,
    /// Answer this many more connections with `503` and close them.
    pub fail_next: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let proxy = Proxy {
            host,
            up: Arc::default(),
            down: Arc::default(),
            cut_after: Arc::default(),
            fail_next: Arc::default(),
            stop: Arc::default(),
        };
        let (up, down, cut, fail, stop) = (
            proxy.up.clone(),
            proxy.down.clone(),
            proxy.cut_after.clone(),
            proxy.fail_next.clone(),
            proxy.stop.clone(),
        );
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut client) = client else { continue };
                if fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let mut head = [0u8; 4096];
                    let _ = client.read(&mut head);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = up.clone();
                std::thread::spawn(move || pump(client, server, &up, None));
                let (down, cut) = (down.clone(), cut.clone());
                std::thread::spawn(move || pump(s2, c2, &down, Some(&cut)));
            }
        });
        proxy
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.host);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64, cut: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        let mut cut_now = false;
        if let Some(cut) = cut {
            let limit = cut.load(Ordering::SeqCst);
            if limit > 0
                && carried + n as u64 > limit
                && cut
                    .compare_exchange(limit, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                n = usize::try_from(limit.saturating_sub(carried)).unwrap_or(0);
                cut_now = true;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        carried += n as u64;
        if cut_now {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
