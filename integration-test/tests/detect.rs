//! `collector detect --submit` against a local HTTP server of the test's that plays both a
//! node (`GET /state`) and the benchmark's conductor (`POST /submit`, graded like the oracle:
//! trim, lower-case, exact match).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::Command,
    sync::mpsc,
};

use integration_test::workspace_binary;

/// Serves `/state` with `state` and grades one submission against `expected`; sends back the
/// body it received and the grade.
fn conductor(
    state: &'static str,
    expected: &'static str,
) -> (String, mpsc::Receiver<(String, u32)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (grades, graded) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let reply = if request_line.starts_with("GET /state") {
                format!(r#"{{"node":"n1","state":"{state}","score":1.0}}"#)
            } else if request_line.starts_with("POST /submit") {
                let submitted: serde_json::Value = serde_json::from_str(&body).unwrap();
                let solution = submitted["solution"].as_str().unwrap_or_default();
                let grade = if solution.trim().to_lowercase() == expected {
                    100
                } else {
                    0
                };
                grades.send((body.clone(), grade)).unwrap();
                format!(r#"{{"score":{grade}}}"#)
            } else {
                panic!("unexpected request {request_line}");
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    });
    (address, graded)
}

fn detect(address: &str) -> (String, String) {
    let output = Command::new(workspace_binary("collector"))
        .args(["detect", "--node", &format!("http://{address}"), "--submit"])
        .arg(format!("http://{address}/submit"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr,
    )
}

#[test]
fn a_degraded_node_is_submitted_as_yes_and_graded_100() {
    let (address, graded) = conductor("degraded", "yes");
    let (answer, stderr) = detect(&address);
    assert_eq!(answer, "Yes");
    let (body, grade) = graded.recv().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"solution": "Yes"})
    );
    assert_eq!(grade, 100);
    assert!(stderr.contains("submitted Yes"), "{stderr}");
}

#[test]
fn healthy_and_learning_nodes_are_no() {
    for state in ["healthy", "learning"] {
        let (address, graded) = conductor(state, "no");
        let (answer, _) = detect(&address);
        assert_eq!(answer, "No", "{state}");
        assert_eq!(graded.recv().unwrap().1, 100, "{state}");
    }
}

#[test]
fn an_unreachable_node_is_an_error_not_an_answer() {
    let port = integration_test::http::free_port();
    let output = Command::new(workspace_binary("collector"))
        .args(["detect", "--node", &format!("http://127.0.0.1:{port}")])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "no Yes/No may be printed without a state"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("/state"));
}
