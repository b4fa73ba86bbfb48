//! `--web.config.file`: basic auth and TLS as exporter-toolkit users configure them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::support::vitals::{BINARY, Vitals};
use crate::support::{free_port, http_client, poll_until, require_binary, temp_dir, write_file};

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt hash")
}

#[test]
fn basic_auth_answers_401_without_and_200_with_credentials() {
    let dir = temp_dir("webauth");
    let web = dir.path().join("web.yml");
    write_file(
        &web,
        format!("basic_auth_users:\n  prom: {}\n", bcrypt_hash("scrape-pw")),
    );
    let (mut vitals, port) = start_with_web_config(
        dir.path(),
        &std::fs::read_to_string(&web).expect("read web.yml"),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = http_client();
    let status = |user: Option<(&str, &str)>| {
        let mut req = client.get(&url);
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        req.send().expect("GET /metrics").status().as_u16()
    };
    assert_eq!(status(None), 401);
    assert_eq!(status(Some(("prom", "wrong"))), 401);
    assert_eq!(status(Some(("nobody", "scrape-pw"))), 401);
    assert_eq!(status(Some(("prom", "scrape-pw"))), 200);

    // The file is re-read on change: a rotated password takes effect without a restart.
    std::thread::sleep(Duration::from_millis(20));
    write_file(
        &web,
        format!("basic_auth_users:\n  prom: {}\n", bcrypt_hash("rotated-pw")),
    );
    let rotated = poll_until(Duration::from_secs(10), || {
        (status(Some(("prom", "rotated-pw"))) == 200).then_some(())
    });
    assert!(rotated.is_some(), "new password not accepted");
    assert_eq!(status(Some(("prom", "scrape-pw"))), 401);
    // A broken edit is rejected and the last good file stays in force.
    write_file(&web, "basic_auth_users:\n  prom: not-a-hash\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(status(Some(("prom", "rotated-pw"))), 200);
    assert_eq!(status(None), 401);
    let logs = vitals.stop_and_logs();
    assert!(logs.contains("web config change rejected"), "{logs}");
    assert!(
        !logs.contains("rotated-pw") && !logs.contains("scrape-pw"),
        "{logs}"
    );
}

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "vitals test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = params.self_signed(&ca_key).expect("ca cert");
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// A leaf certificate and key, in PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

fn curl(args: &[&str]) -> (i32, String) {
    let curl = require_binary("/usr/bin/curl", "curl");
    let out = Command::new(curl)
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// vitals started by hand: with auth or TLS, the harness' readiness probe cannot be used.
struct Running {
    child: std::process::Child,
    stderr: std::path::PathBuf,
}

impl Running {
    fn stop_and_logs(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_with_web_config(dir: &Path, web_yml: &str) -> (Running, u16) {
    let web = dir.join("web.yml");
    write_file(&web, web_yml);
    let port = free_port();
    let stderr = dir.join("vitals.stderr");
    let child = Command::new(BINARY)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", web.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
        .spawn()
        .expect("spawn vitals");
    let up = poll_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(up.is_some(), "vitals with TLS did not listen on {port}");
    (Running { child, stderr }, port)
}

#[test]
fn tls_with_the_ca_succeeds_and_without_it_fails() {
    let dir = temp_dir("webtls");
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["127.0.0.1", "localhost"]);
    let ca = dir.path().join("ca.pem");
    write_file(&ca, &pki.ca_pem);
    write_file(&dir.path().join("server.crt"), cert);
    write_file(&dir.path().join("server.key"), key);
    let (_vitals, port) = start_with_web_config(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n",
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let (code, out) = curl(&["--cacert", &ca.display().to_string(), &url]);
    assert_eq!((code, out.as_str()), (0, "200"), "curl with the CA");
    let (code, _) = curl(&[&url]);
    assert_ne!(
        code, 0,
        "curl without the CA must not trust the certificate"
    );
    let (code, _) = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    assert_ne!(code, 0, "plain HTTP is not served on a TLS port");
}

/// The server speaks HTTP/1.1 only (no h2 in the binary, docs/BENCHMARKS.md): a client that
/// offers HTTP/2 over ALPN gets HTTP/1.1, also when the exporter-toolkit file asks for
/// `http2: true` (accepted for compatibility, with a warning).
#[test]
fn tls_negotiates_http1_even_when_http2_is_asked_for() {
    let dir = temp_dir("webh1");
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["127.0.0.1"]);
    let ca = dir.path().join("ca.pem");
    write_file(&ca, &pki.ca_pem);
    write_file(&dir.path().join("server.crt"), cert);
    write_file(&dir.path().join("server.key"), key);
    let (mut vitals, port) = start_with_web_config(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  http2: true\n",
    );
    let curl = require_binary("/usr/bin/curl", "curl");
    let out = Command::new(curl)
        .args(["-sS", "--max-time", "10", "--http2", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}", "--cacert"])
        .arg(&ca)
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 1.1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = vitals.stop_and_logs();
    assert!(
        logs.contains("http_server_config.http2 is ignored"),
        "{logs}"
    );
}

#[test]
fn tls_client_certificates_are_required_when_configured() {
    let dir = temp_dir("webmtls");
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["127.0.0.1"]);
    let (client_cert, client_key) = pki.leaf(&["prometheus"]);
    let ca = dir.path().join("ca.pem");
    write_file(&ca, &pki.ca_pem);
    write_file(&dir.path().join("server.crt"), cert);
    write_file(&dir.path().join("server.key"), key);
    let cc = dir.path().join("client.crt");
    let ck = dir.path().join("client.key");
    write_file(&cc, client_cert);
    write_file(&ck, client_key);
    let (_vitals, port) = start_with_web_config(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca_arg = ca.display().to_string();
    let (code, out) = curl(&[
        "--cacert",
        &ca_arg,
        "--cert",
        &cc.display().to_string(),
        "--key",
        &ck.display().to_string(),
        &url,
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "200"),
        "curl with a client certificate"
    );
    let (code, _) = curl(&["--cacert", &ca_arg, &url]);
    assert_ne!(code, 0, "no client certificate must be refused");
}

#[test]
fn a_broken_web_config_stops_start_up_with_its_name() {
    let dir = temp_dir("webbad");
    let web = dir.path().join("web.yml");
    write_file(
        &web,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    );
    let (status, logs) = Vitals::builder()
        .arg(&format!("--web.config.file={}", web.display()))
        .run_until_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("web.yml: tls_server_config.cert_file"),
        "{logs}"
    );
}
