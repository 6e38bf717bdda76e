//! The fault benchmark's conductor, as SREGym serves it today: `GET /status` names the stage,
//! `POST /submit` with `{"solution": ...}` grades the current stage, `GET /get_app` names the
//! application's namespaces. We ask the stage before we answer, so an answer goes only to a
//! stage that takes that kind of answer, and every refusal says why in the conductor's words.

use std::{
    fmt,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// The port SREGym's conductor listens on when `API_PORT` is not set.
pub const DEFAULT_PORT: u16 = 8000;

/// How long one request to the conductor may take. Its `/submit` itself waits up to 60 s for
/// the previous stage's grading before it answers 503, so this is longer than that.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// A stage of the conductor (`GET /status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Setup,
    /// Offered by older conductors and by AIOpsLab-like set-ups; SREGym removed it in 2025.
    Detection,
    Diagnosis,
    Mitigation,
    TearingDown,
    Done,
    /// A stage this version does not know: it takes no answer from us.
    Other(String),
}

impl Stage {
    pub fn parse(name: &str) -> Self {
        match name {
            "setup" => Stage::Setup,
            "detection" => Stage::Detection,
            "diagnosis" => Stage::Diagnosis,
            "mitigation" => Stage::Mitigation,
            "tearing_down" => Stage::TearingDown,
            "done" => Stage::Done,
            other => Stage::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Stage::Setup => "setup",
            Stage::Detection => "detection",
            Stage::Diagnosis => "diagnosis",
            Stage::Mitigation => "mitigation",
            Stage::TearingDown => "tearing_down",
            Stage::Done => "done",
            Stage::Other(name) => name,
        }
    }

    /// A stage in which the conductor grades answers (of some kind).
    pub fn takes_answers(&self) -> bool {
        matches!(
            self,
            Stage::Detection | Stage::Diagnosis | Stage::Mitigation
        )
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tool has to say: `detect` a Yes/No, `diagnose` a root-cause statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    Detection,
    Diagnosis,
}

impl AnswerKind {
    /// The one stage that takes this kind of answer.
    pub fn stage(self) -> Stage {
        match self {
            AnswerKind::Detection => Stage::Detection,
            AnswerKind::Diagnosis => Stage::Diagnosis,
        }
    }

    fn tool(self) -> &'static str {
        match self {
            AnswerKind::Detection => "collector detect",
            AnswerKind::Diagnosis => "collector diagnose",
        }
    }
}

/// Why an answer was not graded. Each has its own exit code ([`SubmitError::exit_code`]) so a
/// script can tell "not now" from "never" from "broken".
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The stage takes no answer at all (setup, tearing down, done): not submitted.
    #[error(
        "the conductor is in stage `{stage}`, which takes no answer: not submitted (--wait DURATION waits for a stage that does)"
    )]
    NotNow { stage: Stage },
    /// The stage takes answers, but not of our kind.
    #[error("the conductor is in stage `{stage}`, which does not take {tool}'s answer: {hint}")]
    WrongStage {
        stage: Stage,
        tool: &'static str,
        hint: String,
    },
    /// `--wait` ran out before a stage took our answer.
    #[error("waited {waited:?} and the conductor is still in stage `{stage}`: not submitted")]
    WaitedOut { stage: Stage, waited: Duration },
    /// The conductor answered 4xx: its body says why.
    #[error("the conductor refused the answer (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
    /// The conductor kept answering 503 (still grading the previous stage).
    #[error(
        "the conductor was still grading the previous stage after {waited:?} of retries (HTTP 503): {body}"
    )]
    Busy { waited: Duration, body: String },
    /// The problem was already graded when our answer arrived.
    #[error("the conductor has graded every stage already: {body}")]
    AllDone { body: String },
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

impl SubmitError {
    /// The process exit code for this refusal: 3 not now (no stage takes answers; SREGym's
    /// setup or done), 4 refused (a stage for another kind of answer, or a 4xx), 6 busy,
    /// 1 for anything broken (unreachable, not JSON). 5 is `detect`'s "still learning".
    pub fn exit_code(&self) -> u8 {
        match self {
            SubmitError::NotNow { .. }
            | SubmitError::WaitedOut { .. }
            | SubmitError::AllDone { .. } => 3,
            SubmitError::WrongStage { .. } | SubmitError::Refused { .. } => 4,
            SubmitError::Busy { .. } => 6,
            SubmitError::Transport(_) => 1,
        }
    }
}

/// How patient a submission is.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Wait this long for a stage that takes answers (polling `/status`); zero: refuse at once.
    pub wait: Duration,
    /// Retry a 503 (the conductor still grading the previous stage) for this long.
    pub busy_for: Duration,
    /// Between two polls of `/status`, and the first back-off after a 503 (doubled each time,
    /// at most 8 times this).
    pub poll: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            wait: Duration::ZERO,
            busy_for: Duration::from_secs(180),
            poll: Duration::from_secs(1),
        }
    }
}

/// A conductor's base URL, e.g. `http://conductor:8000`.
#[derive(Debug, Clone)]
pub struct Conductor {
    base: String,
}

impl Conductor {
    /// From a URL the user gave (a base URL, or one ending in `/submit` as the benchmark's docs
    /// write it), or, when `url` is empty, from `API_HOSTNAME` and `API_PORT` as SREGym's own
    /// agents find it.
    pub fn locate(url: &str) -> anyhow::Result<Self> {
        if !url.trim().is_empty() {
            return Ok(Conductor::new(url));
        }
        let host = std::env::var("API_HOSTNAME").map_err(|_| {
            anyhow::anyhow!(
                "--submit without a URL reads the conductor's address from API_HOSTNAME (and \
                 API_PORT, default {DEFAULT_PORT}), and API_HOSTNAME is not set"
            )
        })?;
        let port = match std::env::var("API_PORT") {
            Ok(port) => port
                .trim()
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("API_PORT `{port}` is not a port number"))?,
            Err(_) => DEFAULT_PORT,
        };
        Ok(Conductor::new(&format!("http://{}:{port}", host.trim())))
    }

    pub fn new(url: &str) -> Self {
        let base = url.trim().trim_end_matches('/');
        let base = base.strip_suffix("/submit").unwrap_or(base);
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Conductor { base }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// `GET path` as (status, body).
    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut response = Self::agent()
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to GET {url}"))?;
        Ok((status, body))
    }

    /// `GET path` answered 200 with JSON: that JSON and the body as it came (for messages).
    fn get_json(&self, path: &str) -> anyhow::Result<(serde_json::Value, String)> {
        let (status, body) = self.get(path)?;
        let json: serde_json::Value = serde_json::from_str(&body).with_context(|| {
            format!(
                "{}{path} answered HTTP {status} without JSON: {}",
                self.base,
                body.trim()
            )
        })?;
        if status != 200 {
            anyhow::bail!(
                "{}{path} answered HTTP {status}: {}",
                self.base,
                detail(&json, &body)
            );
        }
        Ok((json, body))
    }

    /// The stage the conductor is in.
    pub fn stage(&self) -> anyhow::Result<Stage> {
        let (json, body) = self.get_json("/status")?;
        match json["stage"].as_str() {
            Some(stage) => Ok(Stage::parse(stage)),
            None => anyhow::bail!("{}/status has no `stage`: {}", self.base, body.trim()),
        }
    }

    /// The application's namespaces (`GET /get_app`: `namespaces`, else `namespace`).
    pub fn app_namespaces(&self) -> anyhow::Result<Vec<String>> {
        let (json, body) = self.get_json("/get_app")?;
        let mut namespaces: Vec<String> = json["namespaces"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if namespaces.is_empty()
            && let Some(namespace) = json["namespace"].as_str()
        {
            namespaces.push(namespace.to_string());
        }
        if namespaces.is_empty() {
            anyhow::bail!("{}/get_app names no namespace: {}", self.base, body.trim());
        }
        Ok(namespaces)
    }

    /// Waits (within `patience.wait`) for a stage that takes answers, checks it takes `kind`'s,
    /// and posts `answer`, retrying 503s within `patience.busy_for`. Returns the conductor's
    /// reply body.
    pub fn submit(
        &self,
        kind: AnswerKind,
        answer: &str,
        patience: Patience,
    ) -> Result<String, SubmitError> {
        let started = Instant::now();
        let stage = loop {
            let stage = self.stage()?;
            if stage.takes_answers() {
                break stage;
            }
            if patience.wait.is_zero() {
                return Err(SubmitError::NotNow { stage });
            }
            if started.elapsed() >= patience.wait {
                return Err(SubmitError::WaitedOut {
                    stage,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(patience.poll);
        };
        if stage != kind.stage() {
            let hint = match (&stage, kind) {
                (Stage::Diagnosis, AnswerKind::Detection) => {
                    "it grades a root-cause statement: use `collector diagnose --submit`"
                        .to_string()
                }
                (Stage::Detection, AnswerKind::Diagnosis) => {
                    "it grades a Yes/No: use `collector detect --submit`".to_string()
                }
                (Stage::Mitigation, _) => {
                    "it grades the cluster after a fix, which nodestate does not make (read-only)"
                        .to_string()
                }
                _ => "no nodestate tool answers it".to_string(),
            };
            return Err(SubmitError::WrongStage {
                stage,
                tool: kind.tool(),
                hint,
            });
        }
        let url = format!("{}/submit", self.base);
        let busy_started = Instant::now();
        let mut backoff = patience.poll;
        loop {
            let mut response = Self::agent()
                .post(&url)
                .send_json(serde_json::json!({ "solution": answer }))
                .with_context(|| format!("POST {url}"))?;
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .read_to_string()
                .with_context(|| format!("reading the answer to POST {url}"))?;
            let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            match status {
                200..=299 => {
                    if json
                        .as_ref()
                        .is_some_and(|json| json["status"].as_str() == Some("done"))
                    {
                        return Err(SubmitError::AllDone {
                            body: body.trim().to_string(),
                        });
                    }
                    return Ok(body);
                }
                503 => {
                    let waited = busy_started.elapsed();
                    if waited + backoff > patience.busy_for {
                        return Err(SubmitError::Busy {
                            waited,
                            body: json.map_or(body.trim().to_string(), |json| detail(&json, &body)),
                        });
                    }
                    tracing::info!(
                        retry_in_s = backoff.as_secs_f64(),
                        "the conductor is still grading the previous stage (HTTP 503)"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(patience.poll * 8);
                }
                400..=499 => {
                    return Err(SubmitError::Refused {
                        status,
                        body: json.map_or(body.trim().to_string(), |json| detail(&json, &body)),
                    });
                }
                _ => {
                    return Err(SubmitError::Transport(anyhow::anyhow!(
                        "POST {url} answered HTTP {status}: {}",
                        body.trim()
                    )));
                }
            }
        }
    }
}

/// FastAPI's `{"detail": ...}`, else the body as it came.
fn detail(json: &serde_json::Value, body: &str) -> String {
    match &json["detail"] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => body.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submit_url_and_a_bare_host_name_the_same_conductor() {
        for url in [
            "http://conductor:8000/submit",
            "http://conductor:8000/",
            "http://conductor:8000",
            "conductor:8000/submit",
        ] {
            assert_eq!(Conductor::new(url).base(), "http://conductor:8000", "{url}");
        }
    }

    #[test]
    fn stages_round_trip_and_only_grading_stages_take_answers() {
        for name in [
            "setup",
            "detection",
            "diagnosis",
            "mitigation",
            "tearing_down",
            "done",
            "x",
        ] {
            let stage = Stage::parse(name);
            assert_eq!(stage.as_str(), name);
            assert_eq!(
                stage.takes_answers(),
                ["detection", "diagnosis", "mitigation"].contains(&name)
            );
        }
    }
}
