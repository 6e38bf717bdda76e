//! The one HTTP client of the cluster tools: a node's JSON endpoints and Prometheus' HTTP API
//! (`/api/v1/query`, `/api/v1/query_range`), shared by `detect`, `rank`, `extender` and
//! fleet training.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail};

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
    let mut request = agent(timeout)
        .get(url)
        .config()
        .http_status_as_error(false)
        .build();
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
