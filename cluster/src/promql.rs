//! The one HTTP client of the cluster tools: a node's JSON endpoints and Prometheus' HTTP API
//! (`/api/v1/query`, `/api/v1/query_range`), shared by `detect`, `rank`, `extender`, `mcp`
//! and fleet training.
//!
//! Prometheus may be behind TLS (`https://`, with `--prometheus-ca-file` for a private CA)
//! and ask for a bearer token (`--prometheus-bearer-token-file`, as OpenShift's and managed
//! Prometheus do): [`PrometheusClientArgs::install`] sets that up once per process, and every
//! request to Prometheus' API ([`api_get`], so [`instant_query`] and fleet training) uses it.
//! Requests to a node's daemon ([`get_json`]) never carry the token.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

/// How to reach a Prometheus behind TLS or bearer-token auth; flattened into every command
/// with a `--prometheus`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrometheusClientArgs {
    /// PEM file of the CA certificate(s) that signed an https:// Prometheus' certificate
    /// (e.g. the cluster's service CA). Default: the Mozilla root store built in.
    #[arg(long, env = "NODESTATE_PROMETHEUS_CA_FILE", value_name = "PEM")]
    pub prometheus_ca_file: Option<PathBuf>,

    /// File holding a bearer token sent to Prometheus (`Authorization: Bearer …`), e.g. a
    /// service account's token. Re-read whenever the file changes, so a rotated token is used
    /// without a restart. Never sent to a node's daemon.
    #[arg(
        long,
        env = "NODESTATE_PROMETHEUS_BEARER_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub prometheus_bearer_token_file: Option<PathBuf>,

    /// Accept any certificate from an https:// Prometheus. For tests only: anyone on the path
    /// can then read the token and forge the answers.
    #[arg(
        long,
        env = "NODESTATE_PROMETHEUS_INSECURE_SKIP_VERIFY",
        conflicts_with = "prometheus_ca_file"
    )]
    pub prometheus_insecure_skip_verify: bool,
}

impl PrometheusClientArgs {
    /// Checks the files (a missing CA or token file is an error now, not at the first query)
    /// and makes every later Prometheus request of this process use them.
    pub fn install(&self) -> anyhow::Result<()> {
        let client = PrometheusClient::new(self)?;
        *CLIENT
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(client));
        Ok(())
    }
}

/// TLS settings and the bearer token of the Prometheus requests.
#[derive(Debug)]
struct PrometheusClient {
    tls: Option<ureq::tls::TlsConfig>,
    token: Option<TokenFile>,
}

static CLIENT: RwLock<Option<Arc<PrometheusClient>>> = RwLock::new(None);

impl PrometheusClient {
    fn new(args: &PrometheusClientArgs) -> anyhow::Result<Self> {
        let tls = if let Some(path) = &args.prometheus_ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --prometheus-ca-file {}", path.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--prometheus-ca-file {}", path.display()))?;
            if certs.is_empty() {
                bail!(
                    "--prometheus-ca-file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                );
            }
            Some(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
        } else if args.prometheus_insecure_skip_verify {
            tracing::warn!(
                "--prometheus-insecure-skip-verify: Prometheus' certificate is not checked"
            );
            Some(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
        } else {
            None
        };
        let token = match &args.prometheus_bearer_token_file {
            Some(path) => {
                let file = TokenFile::new(path);
                file.current()?;
                Some(file)
            }
            None => None,
        };
        Ok(Self { tls, token })
    }
}

/// A bearer token file, read again when its modification time, size or inode change.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(FileStamp, String)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    // Follows symlinks: Kubernetes swaps a projected token's `..data` link on rotation.
    let metadata = std::fs::metadata(path)?;
    Ok(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

impl TokenFile {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// The token now: the cached one while the file is unchanged, else the file read again.
    fn current(&self) -> anyhow::Result<String> {
        let what = || format!("--prometheus-bearer-token-file {}", self.path.display());
        let now = stamp(&self.path).with_context(what)?;
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((seen, token)) = cached.as_ref()
            && *seen == now
        {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(&self.path).with_context(what)?;
        let token = text.trim();
        if token.is_empty() {
            bail!("{} is empty", what());
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            bail!(
                "{} holds more than one token (spaces or line breaks inside)",
                what()
            );
        }
        if cached.is_some() {
            tracing::info!(file = %self.path.display(), "the Prometheus bearer token file changed: using the new token");
        }
        *cached = Some((now, token.to_string()));
        Ok(token.to_string())
    }
}

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// `GET base/path` as JSON, e.g. a node's `/state` or `/rank`.
pub fn get_json(base: &str, path: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut response = agent(timeout)
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not return JSON"))
}

/// A `GET` of Prometheus' HTTP API that did not give a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiGetError {
    #[error("{0}")]
    Call(ureq::Error),
    /// The bearer token file could not be read (or holds no token).
    #[error("{0:#}")]
    Token(anyhow::Error),
    #[error("answered {status} without JSON: {source}")]
    NotJson {
        status: ureq::http::StatusCode,
        source: ureq::Error,
    },
}

/// `GET url?params` of Prometheus' HTTP API: its JSON body, whatever the status, since
/// Prometheus answers a bad query with 400 and a JSON body that says why.
pub fn api_get(
    url: &str,
    params: &[(&str, String)],
    timeout: Duration,
) -> Result<serde_json::Value, ApiGetError> {
    let client = CLIENT
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let agent = match client.as_ref().and_then(|client| client.tls.clone()) {
        Some(tls) => ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .build()
            .into(),
        None => agent(timeout),
    };
    let mut request = agent.get(url).config().http_status_as_error(false).build();
    if let Some(token) = client.as_ref().and_then(|client| client.token.as_ref()) {
        let token = token.current().map_err(ApiGetError::Token)?;
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    for (name, value) in params {
        request = request.query(*name, value);
    }
    let mut response = request.call().map_err(ApiGetError::Call)?;
    let status = response.status();
    response
        .body_mut()
        .read_json()
        .map_err(|source| ApiGetError::NotJson { status, source })
}

/// Runs an instant PromQL query and returns its vector (an error for any other result type,
/// and for a refusal, with Prometheus' own message).
pub fn instant_query(
    prometheus: &str,
    query: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let body = match api_get(&url, &[("query", query.to_string())], timeout) {
        Ok(body) => body,
        Err(ApiGetError::Call(err)) => {
            return Err(anyhow::Error::new(err).context(format!("GET {url}")));
        }
        Err(ApiGetError::Token(err)) => return Err(err.context(format!("GET {url}"))),
        Err(ApiGetError::NotJson { status, source }) => {
            return Err(
                anyhow::Error::new(source).context(format!("{url} answered {status} without JSON"))
            );
        }
    };
    parse_vector(&body).with_context(|| format!("query {query}"))
}

/// The samples of a `/api/v1/query` answer whose result is a vector.
pub fn parse_vector(body: &serde_json::Value) -> anyhow::Result<Vec<Sample>> {
    if body["status"] != "success" {
        bail!(
            "Prometheus refused it: {} {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("(no message)")
        );
    }
    if body["data"]["resultType"] != "vector" {
        bail!(
            "expected an instant vector, got {}",
            body["data"]["resultType"]
        );
    }
    let mut samples = Vec::new();
    for series in body["data"]["result"].as_array().into_iter().flatten() {
        let labels = series["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
            .collect();
        // Values are strings ("1", "NaN", "+Inf"); Rust parses all three spellings.
        let Some(value) = series["value"][1]
            .as_str()
            .and_then(|text| text.parse::<f64>().ok())
        else {
            bail!("a series without a numeric value: {series}");
        };
        samples.push(Sample { labels, value });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_read_again_when_it_changes_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::new(&path);
        assert_eq!(file.current().unwrap(), "first");
        // Rotated as Kubernetes does: a new file renamed over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-token").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.current().unwrap(), "second-token");
        // Rewritten in place, same length: the inode stays, the modification time moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "second-TOKEN").unwrap();
        assert_eq!(file.current().unwrap(), "second-TOKEN");
        std::fs::write(&path, "\n").unwrap();
        assert!(file.current().unwrap_err().to_string().contains("is empty"));
        std::fs::write(&path, "two tokens").unwrap();
        assert!(
            file.current()
                .unwrap_err()
                .to_string()
                .contains("more than one token")
        );
        std::fs::remove_file(&path).unwrap();
        let err = format!("{:#}", file.current().unwrap_err());
        assert!(err.contains("--prometheus-bearer-token-file"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_or_missing_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let args = |ca: &Path| PrometheusClientArgs {
            prometheus_ca_file: Some(ca.to_path_buf()),
            ..PrometheusClientArgs::default()
        };
        let err = PrometheusClient::new(&args(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = PrometheusClient::new(&args(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reading --prometheus-ca-file"), "{err}");
    }

    #[test]
    fn vectors_parse_with_labels_and_odd_values() {
        let body = serde_json::json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [
                {"metric": {"node": "a", "state": "degraded"}, "value": [1764600000.1, "1"]},
                {"metric": {"node": "b"}, "value": [1764600000.1, "NaN"]},
                {"metric": {"node": "c"}, "value": [1764600000.1, "+Inf"]},
            ]}
        });
        let samples = parse_vector(&body).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["state"], "degraded");
        assert_eq!(samples[0].value, 1.0);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::INFINITY);
    }

    #[test]
    fn refusals_and_other_result_types_are_errors_with_the_reason() {
        let refused = serde_json::json!({
            "status": "error", "errorType": "bad_data",
            "error": "invalid parameter \"query\": 1:10: parse error"
        });
        let err = parse_vector(&refused).unwrap_err().to_string();
        assert!(
            err.contains("bad_data") && err.contains("parse error"),
            "{err}"
        );
        let scalar = serde_json::json!({
            "status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}
        });
        assert!(
            parse_vector(&scalar)
                .unwrap_err()
                .to_string()
                .contains("scalar")
        );
    }
}
