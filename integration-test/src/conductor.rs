//! A benchmark conductor for tests, following SREGym's API as its `conductor_api.py` serves
//! it: `GET /status` → `{"stage": ...}`; `POST /submit` with `{"solution": ...}` grades the
//! current stage and moves to the next, answers 400 `{"detail": "Cannot submit at stage:
//! 'setup'"}` in a stage that takes no answer, 503 `{"detail": "Previous stage is still being
//! evaluated. Try again later."}` while the previous stage is being graded, and
//! `{"status": "done", ...}` once every stage is graded; `GET /get_app` names the namespaces.
//! SREGym takes answers in `diagnosis` and `mitigation`; [`TestConductor::with_detection`]
//! also takes them in `detection`, as older conductors did. It also plays a node's `GET /state`
//! when given one, so a test needs one server.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
};

#[derive(Default)]
struct Inner {
    stages: Vec<String>,
    at: usize,
    answering: Vec<&'static str>,
    /// The next this many submissions are answered 503.
    busy: u32,
    /// The next submission is answered 400 "Grading error: ..." (as SREGym does when its
    /// grader raises).
    grading_error: bool,
    node_state: Option<String>,
    /// A whole `/state` document, served instead of the one made from `node_state`.
    node_state_json: Option<serde_json::Value>,
    namespaces: Vec<String>,
    /// (stage, solution) of every graded submission.
    graded: Vec<(String, String)>,
    /// Every POST /submit, graded or not.
    posts: u32,
}

impl Inner {
    fn stage(&self) -> &str {
        self.stages.get(self.at).map_or("done", String::as_str)
    }
}

pub struct TestConductor {
    address: String,
    inner: Arc<Mutex<Inner>>,
}

impl TestConductor {
    /// SREGym's conductor today, going through `stages` (e.g. `["diagnosis", "mitigation",
    /// "done"]`), one per graded submission.
    pub fn sregym(stages: &[&str]) -> Self {
        Self::start(stages, vec!["diagnosis", "mitigation"])
    }

    /// A conductor with a detection stage.
    pub fn with_detection(stages: &[&str]) -> Self {
        Self::start(stages, vec!["detection", "diagnosis", "mitigation"])
    }

    fn start(stages: &[&str], answering: Vec<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let inner = Arc::new(Mutex::new(Inner {
            stages: stages.iter().map(|s| s.to_string()).collect(),
            answering,
            namespaces: vec!["test-app".into()],
            ..Default::default()
        }));
        let shared = inner.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        TestConductor { address, inner }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Also serve a node's `/state` with this state.
    pub fn serve_node_state(&self, state: &str) {
        self.inner.lock().unwrap().node_state = Some(state.to_string());
    }

    /// Also serve this whole document as the node's `/state` (explanation, culprits...).
    pub fn serve_node_state_json(&self, state: serde_json::Value) {
        self.inner.lock().unwrap().node_state_json = Some(state);
    }

    /// Answer the next `count` submissions with 503.
    pub fn busy_for(&self, count: u32) {
        self.inner.lock().unwrap().busy = count;
    }

    pub fn fail_next_grading(&self) {
        self.inner.lock().unwrap().grading_error = true;
    }

    pub fn set_namespaces(&self, namespaces: &[&str]) {
        self.inner.lock().unwrap().namespaces = namespaces.iter().map(|s| s.to_string()).collect();
    }

    /// Moves to the next stage without a submission (as the conductor does after setup).
    pub fn advance(&self) {
        self.inner.lock().unwrap().at += 1;
    }

    pub fn stage(&self) -> String {
        self.inner.lock().unwrap().stage().to_string()
    }

    /// (stage, solution) of every graded submission.
    pub fn graded(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().graded.clone()
    }

    pub fn posts(&self) -> u32 {
        self.inner.lock().unwrap().posts
    }
}

fn serve(mut stream: TcpStream, shared: &Mutex<Inner>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut inner = shared.lock().unwrap();
    let (status, reply) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["GET", "/status"] => (200, serde_json::json!({ "stage": inner.stage() })),
        ["GET", "/get_app"] => (
            200,
            serde_json::json!({
                "app_name": "Test App",
                "namespace": inner.namespaces.first(),
                "namespaces": inner.namespaces,
                "descriptions": "an application of the test's",
            }),
        ),
        ["GET", "/state"] => match &inner.node_state {
            _ if inner.node_state_json.is_some() => (200, inner.node_state_json.clone().unwrap()),
            Some(state) => (
                200,
                serde_json::json!({ "node": "n1", "state": state, "score": 1.0 }),
            ),
            None => (404, serde_json::json!({ "detail": "Not Found" })),
        },
        ["POST", "/submit"] => {
            inner.posts += 1;
            let stage = inner.stage().to_string();
            let solution = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|json| json["solution"].as_str().map(str::to_string));
            if !inner.answering.contains(&stage.as_str()) {
                if stage == "done" {
                    (
                        200,
                        serde_json::json!({
                            "status": "done",
                            "message": "All stages have been completed and graded. No further submissions are needed.",
                        }),
                    )
                } else {
                    (
                        400,
                        serde_json::json!({ "detail": format!("Cannot submit at stage: '{stage}'") }),
                    )
                }
            } else if let Some(solution) = solution {
                if inner.busy > 0 {
                    inner.busy -= 1;
                    (
                        503,
                        serde_json::json!({ "detail": "Previous stage is still being evaluated. Try again later." }),
                    )
                } else if std::mem::take(&mut inner.grading_error) {
                    (
                        400,
                        serde_json::json!({ "detail": "Grading error: the test's grader failed" }),
                    )
                } else {
                    inner.graded.push((stage, solution));
                    inner.at += 1;
                    (
                        200,
                        serde_json::json!({ "status": "200", "message": "Submission received" }),
                    )
                }
            } else {
                // FastAPI's answer to a body that is not a SubmitRequest.
                (
                    422,
                    serde_json::json!({ "detail": [{ "msg": "Field required", "loc": ["body", "solution"] }] }),
                )
            }
        }
        _ => (404, serde_json::json!({ "detail": "Not Found" })),
    };
    drop(inner);
    let reply = reply.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        _ => "Service Unavailable",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}
