//! A minimal HTTP/1.1 client over loopback (GET, and POST of JSON), enough to talk to the
//! daemon, the scheduler extender and Prometheus.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// Status code and body of `GET http://{address}{path}`, or `None` if nothing answers.
pub fn get(address: &str, path: &str) -> Option<(u16, String)> {
    exchange(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
}

/// The body of `GET http://{address}{path}` parsed as JSON when it answers 200; `None` if
/// nothing answers or with another status (the callers poll until it does). A 200 whose body
/// is not JSON panics with the body: every page the tests read this way is the daemon's (or
/// Prometheus's) JSON, and a failure should show what came instead.
pub fn get_json(address: &str, path: &str) -> Option<serde_json::Value> {
    let (200, body) = get(address, path)? else {
        return None;
    };
    Some(
        serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("GET {path}: not JSON ({err}): {body}")),
    )
}

/// Status code and body of `POST http://{address}{path}` with a JSON body, or `None` if
/// nothing answers.
pub fn post_json(address: &str, path: &str, body: &str) -> Option<(u16, String)> {
    exchange(
        address,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn exchange(address: &str, request: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A free TCP port on loopback (bound then released; tests run one at a time).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The first series of an instant PromQL query (`{"metric": …, "value": [t, "v"]}`) against
/// the Prometheus at `address`; `None` until it answers with one.
pub fn promql_first_series(address: &str, promql: &str) -> Option<serde_json::Value> {
    let (status, body) = get(address, &format!("/api/v1/query?query={}", encode(promql)))?;
    if status != 200 {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    body["data"]["result"].as_array()?.first().cloned()
}

/// The value of a PromQL series as [`promql_first_series`] returns it.
pub fn series_value(series: &serde_json::Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}
