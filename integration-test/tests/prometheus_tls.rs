//! The Prometheus clients (`detect`, the extender, `model train --prometheus`, and through
//! the same client `mcp`) against a real Prometheus behind TLS (its own `--web.config.file`,
//! with a CA the test makes) and behind a bearer-token check (a small proxy here, since
//! Prometheus has no bearer auth of its own): wrong and missing tokens refused, a rotated
//! token file read again by a running extender.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

use integration_test::{
    http::{free_port, get, post_json},
    process::{PROMETHEUS, Process, prometheus, wait_for},
    workspace_binary,
};

const ARGS_NODE_NAMES: &str = include_str!("fixtures/extender-args-node-names.json");

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("NODESTATE_PROMETHEUS_CA_FILE")
        .env_remove("NODESTATE_PROMETHEUS_BEARER_TOKEN_FILE")
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", program.display()))
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian's openssl package)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        text(&output).1
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=nodestate test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A Prometheus serving HTTPS only, with `cert`/`key`.
fn prometheus_tls(dir: &Path, address: &str, cert: &Path, key: &Path) -> Process {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\nscrape_configs: []\n",
    )
    .unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    Process::start(
        Path::new(PROMETHEUS),
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={address}"),
            &format!("--web.config.file={}", web.display()),
            "--log.level=warn",
        ],
        &[],
    )
}

#[test]
fn detect_and_fleet_training_read_a_prometheus_behind_tls() {
    let collector = workspace_binary("collector");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let address = format!("127.0.0.1:{}", free_port());
    let url = format!("https://{address}");
    let server = prometheus_tls(dir.path(), &address, &cert, &key);
    let ca_text = ca.to_str().unwrap();

    // With its CA: Prometheus answers (no node is degraded there: "No").
    let output = wait_for(Duration::from_secs(60), "Prometheus over TLS", || {
        let output = run(
            &collector,
            &[
                "detect",
                "--prometheus",
                &url,
                "--prometheus-ca-file",
                ca_text,
                "--output",
                "json",
            ],
        );
        output.status.success().then_some(output)
    });
    let (stdout, _) = text(&output);
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!({"answer": "No", "learning": false})
    );

    // Without it the certificate is refused (Mozilla's roots do not hold the test CA)…
    let output = run(&collector, &["detect", "--prometheus", &url]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    // …unless told to skip the check (tests only), and a bad CA file is an error at start.
    let output = run(
        &collector,
        &[
            "detect",
            "--prometheus",
            &url,
            "--prometheus-insecure-skip-verify",
        ],
    );
    assert_eq!(text(&output).0.trim(), "No", "{}", text(&output).1);
    let output = run(
        &collector,
        &[
            "detect",
            "--prometheus",
            &url,
            "--prometheus-ca-file",
            key.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("holds no PEM certificate"),
        "{}",
        text(&output).1
    );

    // Fleet training goes through the same client: Prometheus is reached (and says it holds
    // no daemon windows), no TLS error.
    let output = run(
        &workspace_binary("model"),
        &[
            "train",
            "--prometheus",
            &url,
            "--prometheus-ca-file",
            ca_text,
            "--since",
            "1m",
            "--out",
            dir.path().join("m.json").to_str().unwrap(),
        ],
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("no daemon windows"), "{stderr}");
    drop(server);
}

/// A reverse proxy that forwards a request to `upstream` only with `Authorization: Bearer
/// <expected>`, else answers 401; it records every Authorization header it saw.
struct TokenProxy {
    address: String,
    expected: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TokenProxy {
    fn start(upstream: String, expected: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let expected = Arc::new(Mutex::new(expected.to_string()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (want, log) = (expected.clone(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (want, log, upstream) = (want.clone(), log.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &want, &log);
                });
            }
        });
        Self {
            address,
            expected,
            seen,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn expect(&self, token: &str) {
        *self.expected.lock().unwrap() = token.to_string();
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// One request (a GET: Prometheus' API reads need no body), then the connection closes.
fn serve(
    client: TcpStream,
    upstream: &str,
    expected: &Mutex<String>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "authorization" {
                authorization = value.trim().to_string();
            }
            if matches!(name.as_str(), "connection" | "authorization") {
                continue;
            }
        }
        head.push(line);
    }
    seen.lock().unwrap().push(authorization.clone());
    let mut client = client;
    if authorization != format!("Bearer {}", expected.lock().unwrap()) {
        return client.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nConnection: close\r\n\r\nunauthorized\n",
        );
    }
    let mut server = TcpStream::connect(upstream)?;
    let mut request = head.concat();
    request.push_str("Connection: close\r\n\r\n");
    server.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    client.write_all(&response)
}

#[test]
fn a_bearer_token_is_required_and_a_rotated_token_file_is_read_again() {
    let collector = workspace_binary("collector");
    let dir = tempfile::tempdir().unwrap();
    let prometheus_address = format!("127.0.0.1:{}", free_port());
    let server = prometheus(&[], dir.path(), &prometheus_address);
    wait_for(Duration::from_secs(60), "Prometheus ready", || {
        get(&prometheus_address, "/-/ready").filter(|(status, _)| *status == 200)
    });
    let proxy = TokenProxy::start(prometheus_address.clone(), "alpha-1");
    let token = dir.path().join("token");
    std::fs::write(&token, "alpha-1\n").unwrap();
    let token_text = token.to_str().unwrap();
    let url = proxy.url();

    // The right token: an answer; none or a wrong one: refused, with the status said.
    let output = run(
        &collector,
        &[
            "detect",
            "--prometheus",
            &url,
            "--prometheus-bearer-token-file",
            token_text,
        ],
    );
    assert_eq!(text(&output).0.trim(), "No", "{}", text(&output).1);
    assert!(proxy.seen().contains(&"Bearer alpha-1".to_string()));
    let output = run(&collector, &["detect", "--prometheus", &url]);
    assert!(!output.status.success());
    assert!(text(&output).1.contains("401"), "{}", text(&output).1);
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "beta-2").unwrap();
    let output = run(
        &collector,
        &[
            "detect",
            "--prometheus",
            &url,
            "--prometheus-bearer-token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    assert!(text(&output).1.contains("401"), "{}", text(&output).1);
    // A missing token file is an error at start, naming the flag.
    let output = run(
        &collector,
        &[
            "detect",
            "--prometheus",
            &url,
            "--prometheus-bearer-token-file",
            "/nonexistent/token",
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("--prometheus-bearer-token-file"),
        "{}",
        text(&output).1
    );

    // A running extender reads the file again when it changes: the token rotates on the
    // server first (refused: the filter says so), then in the file (answered again).
    let extender_address = format!("127.0.0.1:{}", free_port());
    let extender = Process::start(
        &collector,
        &[
            "extender",
            "--listen",
            &extender_address,
            "--prometheus",
            &url,
            "--prometheus-bearer-token-file",
            token_text,
            "--cache-ttl",
            "100ms",
            "--keep-last-for",
            "0s",
            "--on-prometheus-error",
            "error",
        ],
        &[],
    );
    wait_for(Duration::from_secs(10), "the extender's /healthz", || {
        get(&extender_address, "/healthz").filter(|(status, _)| *status == 200)
    });
    let filter_error = || -> String {
        let (_, body) =
            post_json(&extender_address, "/filter", ARGS_NODE_NAMES).expect("the extender answers");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        body["Error"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(filter_error(), "", "{}", extender.log());
    proxy.expect("beta-2");
    wait_for(Duration::from_secs(10), "the old token refused", || {
        (!filter_error().is_empty()).then_some(())
    });
    assert!(extender.log().contains("401"), "{}", extender.log());
    let next = dir.path().join("token.next");
    std::fs::write(&next, "beta-2\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    wait_for(Duration::from_secs(10), "the rotated token used", || {
        filter_error().is_empty().then_some(())
    });
    assert!(proxy.seen().contains(&"Bearer beta-2".to_string()));
    assert!(
        extender.log().contains("bearer token file changed"),
        "{}",
        extender.log()
    );
    drop(extender);
    drop(server);
}
