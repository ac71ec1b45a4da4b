//! TLS to the fleet's PostgreSQL, against PostgreSQL servers these tests
//! start themselves (the machine's own server is shared, so its TLS set-up
//! is not ours to change): one that accepts only TLS, with certificates
//! from a test CA, and one with TLS off.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use warnseed_fleet::{Forwarder, ForwarderConfig, PgConfig, PgStore};

/// The server binaries of Debian's `postgresql` package.
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found under /usr/lib/postgresql/*/bin: install Debian's postgresql")
        })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// PostgreSQL refuses to run as root; as root the server runs as the
/// `postgres` account, which owns what it must read.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn give_to_server_user(path: &Path) {
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(path));
    }
}

/// Keys and certificates made with the `openssl` command: a CA the nodes
/// trust, the server's certificate (for `localhost` only), a client
/// certificate for the role `certnode`, and a CA nobody uses.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Self {
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509", "-days", "3", "-subj"];
            let subject = format!("/CN=warnseed test {ca}");
            args.push(&subject);
            args.extend(ec);
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            args.extend(["-keyout", &key, "-out", &crt]);
            openssl(&args);
        }
        std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "certnode")] {
            let subject = format!("/CN={cn}");
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            let mut args = vec!["req", "-subj", &subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-days",
                "3",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ]);
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A PostgreSQL server of the test's own on 127.0.0.1, stopped on drop.
struct Server {
    child: Child,
    port: u16,
    socket_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `tls`: accept only TLS connections over TCP, with `pki`'s server
    /// certificate, and let the role `certnode` in by client certificate.
    fn start(pki: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        give_to_server_user(dir.path());
        run(as_server_user(&pg_bin("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--no-instructions",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 16MB\nmax_connections = 20\n",
            dir.path().display()
        );
        let mut hba = String::from("local all all trust\n");
        if let Some(pki) = pki {
            for name in ["server.crt", "server.key", "ca.crt"] {
                std::fs::copy(pki.dir.join(name), data.join(name)).unwrap();
            }
            give_to_server_user(&data);
            run(Command::new("chmod").arg("600").arg(data.join("server.key")));
            conf.push_str(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n",
            );
            // No `host` or `hostnossl` line: plain text over TCP is refused.
            hba.push_str("hostssl all certnode 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 trust\n");
        } else {
            conf.push_str("ssl = off\n");
            hba.push_str("host all all 127.0.0.1/32 trust\n");
        }
        let append = |file: &str, text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join(file))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append("postgresql.conf", &conf);
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        give_to_server_user(&data);
        let child = as_server_user(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        let server = Self {
            child,
            port,
            socket_dir: dir.path().to_path_buf(),
            _dir: dir,
        };
        server.wait_ready();
        if pki.is_some() {
            server.psql("CREATE ROLE certnode LOGIN SUPERUSER");
        }
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(pg_bin("pg_isready"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test's PostgreSQL did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// As the superuser over the server's Unix socket.
    fn psql(&self, sql: &str) {
        run(Command::new(pg_bin("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qAtc",
                sql,
            ]));
    }

    fn config(&self, conninfo_tail: &str) -> PgConfig {
        PgConfig::new(
            format!(
                "port={} dbname=postgres connect_timeout=10 {conninfo_tail}",
                self.port
            ),
            "ws_tls",
        )
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and returns the TLS version in use, or the error's text.
fn connect(config: &PgConfig) -> Result<Option<String>, String> {
    PgStore::connect(config)
        .and_then(|mut s| s.tls_version())
        .map_err(|e| e.to_string())
}

#[test]
fn nodes_reach_a_tls_only_server_with_each_sslmode() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(pki_dir.path());
    let server = Server::start(Some(&pki));
    let ca = pki.path("ca.crt");

    // verify-full with the fleet's CA: a whole ledger forwarded over TLS.
    let pg = server.config(&format!(
        "host=localhost user=postgres sslmode=verify-full sslrootcert={ca}"
    ));
    let version = connect(&pg).unwrap();
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );
    let ledger_dir = tempfile::tempdir().unwrap();
    let path = ledger_dir.path().join("ledger.sqlite");
    let mut local = ledger(&path);
    append(
        &mut local,
        &Sessions::new(3, START_MS, 60_000, 50).records(300),
        100,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut forwarder = Forwarder::new(ForwarderConfig::new(pg.clone(), path.clone())).unwrap();
    let status = rt.block_on(forwarder.forward_available()).unwrap();
    assert_eq!((status.forwarded_seq, status.lag), (600, 0));
    let node = local.node_id().unwrap();
    assert_eq!(PgStore::connect(&pg).unwrap().head(&node).unwrap().seq, 600);
    // The URL form says the same.
    let url = format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        server.port
    );
    assert!(connect(&PgConfig::new(url, "ws_tls").unwrap()).unwrap().is_some());

    // The server's certificate names localhost, not 127.0.0.1: verify-full
    // refuses the address, verify-ca (no name check) takes it.
    let err = connect(&server.config(&format!(
        "host=127.0.0.1 user=postgres sslmode=verify-full sslrootcert={ca}"
    )))
    .unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    let by_ca = server.config(&format!(
        "host=127.0.0.1 user=postgres sslmode=verify-ca sslrootcert={ca}"
    ));
    assert!(connect(&by_ca).unwrap().is_some());

    // A certificate from a CA the node does not trust is refused, whether
    // the roots are a file or the system's (the default).
    let other = pki.path("other-ca.crt");
    for tail in [format!("sslrootcert={other}"), String::new()] {
        let err = connect(&server.config(&format!(
            "host=localhost user=postgres sslmode=verify-full {tail}"
        )))
        .unwrap_err();
        assert!(err.contains("certificate verify failed"), "{tail}: {err}");
    }
    // Not on loopback, no sslmode: verify-full is the default. (Nothing
    // is sent: the name does not resolve, which is the error.)
    let remote = PgConfig::new("host=db.invalid user=postgres", "ws_tls").unwrap();
    assert_eq!(remote.tls_mode().unwrap(), warnseed_fleet::TlsMode::VerifyFull);

    // require encrypts and checks nothing; given a root certificate it
    // checks the chain, as libpq does.
    assert!(
        connect(&server.config("host=127.0.0.1 user=postgres sslmode=require"))
            .unwrap()
            .is_some()
    );
    let err = connect(&server.config(&format!(
        "host=127.0.0.1 user=postgres sslmode=require sslrootcert={other}"
    )))
    .unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
    // Plain text is refused by this server, so every success above was TLS.
    let err = connect(&server.config("host=127.0.0.1 user=postgres sslmode=disable")).unwrap_err();
    assert!(err.contains("no encryption"), "{err}");

    // A node that authenticates with a client certificate, and one that
    // has none for the same role.
    let cert = format!(
        "sslcert={} sslkey={}",
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let as_node = server.config(&format!(
        "host=localhost user=certnode sslmode=verify-full sslrootcert={ca} {cert}"
    ));
    assert!(connect(&as_node).unwrap().is_some());
    let err = connect(&server.config(&format!(
        "host=localhost user=certnode sslmode=verify-full sslrootcert={ca}"
    )))
    .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    // A key file in another format is named with the fix.
    let pkcs1 = pki_dir.path().join("client-ec.key");
    run(Command::new("openssl")
        .args(["ec", "-in", &pki.path("client.key"), "-out"])
        .arg(&pkcs1));
    let bad = format!("sslcert={} sslkey={}", pki.path("client.crt"), pkcs1.display());
    let err = connect(&server.config(&format!(
        "host=localhost user=certnode sslmode=verify-full sslrootcert={ca} {bad}"
    )))
    .unwrap_err();
    assert!(err.contains("PKCS#8") && err.contains("openssl pkcs8"), "{err}");
}

#[test]
fn a_server_without_tls_is_never_reached_in_plain_text_unless_asked() {
    let server = Server::start(None);
    for mode in ["require", "verify-ca", "verify-full"] {
        let err =
            connect(&server.config(&format!("host=127.0.0.1 user=postgres sslmode={mode}"))).unwrap_err();
        assert!(
            err.to_lowercase().contains("tls") || err.contains("SSL"),
            "{mode}: {err}"
        );
    }
    // On loopback the default is plain text, as is sslmode=disable.
    assert_eq!(connect(&server.config("host=127.0.0.1 user=postgres")), Ok(None));
    assert_eq!(
        connect(&server.config("host=localhost user=postgres sslmode=disable")),
        Ok(None)
    );
}
