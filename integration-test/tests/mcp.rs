//! `collector mcp` with a real MCP client (rmcp's, over stdio) and raw JSON-RPC over its
//! streamable HTTP transport, reading a real daemon and the real Prometheus that scrapes it:
//! every tool listed and called, bad arguments refused.

use std::time::Duration;

use integration_test::{
    http::{free_port, get_json, promql_first_series},
    privileged,
    process::{Process, prometheus, wait_for},
    workspace_binary,
};
use rmcp::{
    ServiceExt as _,
    model::{CallToolRequestParams, CallToolResult},
    service::{RoleClient, RunningService},
    transport::{ConfigureCommandExt as _, TokioChildProcess},
};

const NODE: &str = "mcp-test-node";

async fn client(args: &[&str]) -> RunningService<RoleClient, ()> {
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(workspace_binary("collector")).configure(|command| {
            command.arg("mcp").args(args);
        }),
    )
    .expect("starting collector mcp");
    ().serve(transport).await.expect("MCP handshake")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    arguments: serde_json::Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let mut params = CallToolRequestParams::new(tool);
    if let serde_json::Value::Object(arguments) = arguments {
        params = params.with_arguments(arguments);
    }
    client.call_tool(params).await
}

/// The structured result of a call that must succeed.
async fn ok(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    arguments: serde_json::Value,
) -> serde_json::Value {
    let result = call(client, tool, arguments.clone())
        .await
        .unwrap_or_else(|err| panic!("{tool} {arguments}: {err}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} {arguments}: {result:?}"
    );
    result.structured_content.expect("a structured result")
}

/// The text of a call that must be refused with an error result.
async fn refused(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    arguments: serde_json::Value,
) -> String {
    let result = call(client, tool, arguments.clone())
        .await
        .unwrap_or_else(|err| panic!("{tool} {arguments}: {err}"));
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} {arguments}: {result:?}"
    );
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_agent_asks_nodestate_over_mcp() {
    if !privileged("an_agent_asks_nodestate_over_mcp") {
        return;
    }
    let daemon_address = format!("127.0.0.1:{}", free_port());
    let _daemon = Process::start(
        &workspace_binary("collector"),
        &[
            "run",
            "--window",
            "1s",
            "--learn-for",
            "6s",
            "--listen",
            &daemon_address,
        ],
        &[("NODE_NAME", NODE)],
    );
    let dir = tempfile::tempdir().unwrap();
    let prometheus_address = format!("127.0.0.1:{}", free_port());
    let _prometheus = prometheus(
        std::slice::from_ref(&daemon_address),
        dir.path(),
        &prometheus_address,
    );
    wait_for(Duration::from_secs(60), "healthy in Prometheus", || {
        promql_first_series(
            &prometheus_address,
            "nodestate_state{state=\"healthy\"} == 1",
        )
    });
    let state = get_json(&daemon_address, "/state").expect("/state answers");
    assert_eq!(
        state["state"], "healthy",
        "the node stays healthy for this test: {state}"
    );
    let node_url = format!("http://{daemon_address}");
    let prometheus_url = format!("http://{prometheus_address}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // One node's daemon.
        let node = client(&["--node", &node_url]).await;
        let mut tools: Vec<String> = node
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        tools.sort();
        assert_eq!(
            tools,
            [
                "detect",
                "diagnose",
                "explain_node",
                "node_states",
                "top_workloads"
            ]
        );

        let states = ok(&node, "node_states", serde_json::json!({})).await;
        assert_eq!(states["nodes"][0]["node"], NODE, "{states}");
        assert_eq!(states["nodes"][0]["state"], "healthy", "{states}");
        let explained = ok(&node, "explain_node", serde_json::json!({})).await;
        assert_eq!(explained["node"], NODE, "{explained}");
        assert!(explained["explanation"].is_array(), "{explained}");
        // A score above the threshold for one window does not change the state (the judge
        // waits for several windows), so only the numbers' presence is checked here.
        assert_eq!(explained["state"], "healthy", "{explained}");
        assert!(
            explained["score"].as_f64().is_some_and(f64::is_finite),
            "{explained}"
        );
        assert!(
            explained["threshold"].as_f64().is_some_and(|t| t > 0.0),
            "{explained}"
        );
        let answer = ok(&node, "detect", serde_json::json!({})).await;
        assert_eq!(answer["answer"], "No", "{answer}");
        // A healthy node: nothing to blame, said so.
        let diagnosis = ok(
            &node,
            "diagnose",
            serde_json::json!({"namespaces": ["shop"]}),
        )
        .await;
        assert_eq!(
            diagnosis["component"],
            serde_json::Value::Null,
            "{diagnosis}"
        );
        assert!(
            diagnosis["description"]
                .as_str()
                .unwrap()
                .contains("No node is degraded"),
            "{diagnosis}"
        );
        let text = refused(&node, "diagnose", serde_json::json!({"namespaces": [""]})).await;
        assert!(text.contains("namespace"), "{text}");
        // What each workload does in the last window, sorted by the signal asked for.
        let top = ok(
            &node,
            "top_workloads",
            serde_json::json!({"sort": "oncpu_time"}),
        )
        .await;
        assert_eq!(top["node"], NODE, "{top}");
        assert_eq!(top["sorted_by"], "oncpu_time", "{top}");
        let rows = top["workloads"].as_array().expect("a workloads list");
        let cpu: Vec<f64> = rows
            .iter()
            .map(|row| row["rates"]["oncpu_time"].as_f64().unwrap())
            .collect();
        assert!(cpu.windows(2).all(|pair| pair[0] >= pair[1]), "{top}");
        if !rows.is_empty() {
            let text = refused(&node, "top_workloads", serde_json::json!({"sort": "bogus"})).await;
            assert!(
                text.contains("oncpu_time"),
                "names the signals it knows: {text}"
            );
        }
        let text = refused(&node, "top_workloads", serde_json::json!({"limit": 0})).await;
        assert!(text.contains("limit"), "{text}");

        let text = refused(
            &node,
            "explain_node",
            serde_json::json!({"node": "elsewhere"}),
        )
        .await;
        assert!(text.contains(NODE), "says which node it reads: {text}");
        let text = refused(&node, "detect", serde_json::json!({"range": "5 minutes"})).await;
        assert!(text.contains("PromQL duration"), "{text}");
        // Arguments of the wrong type and unknown tools are refused (a protocol error or an
        // error result, as the SDK chooses), never run.
        for (tool, arguments) in [
            ("explain_node", serde_json::json!({"node": 5})),
            ("blocklist_add", serde_json::json!({})),
        ] {
            let outcome = call(&node, tool, arguments).await;
            assert!(
                outcome.as_ref().map_or(true, |r| r.is_error == Some(true)),
                "{tool}: {outcome:?}"
            );
        }
        node.cancel().await.unwrap();

        // The cluster's Prometheus.
        let cluster = client(&["--prometheus", &prometheus_url]).await;
        let states = ok(&cluster, "node_states", serde_json::json!({})).await;
        let nodes = states["nodes"].as_array().unwrap();
        let ours = nodes
            .iter()
            .find(|n| n["node"] == NODE)
            .expect("our node listed");
        assert_eq!(ours["state"], "healthy", "{states}");
        assert!(
            ours["rank"].as_f64().is_some_and(|rank| rank >= 60.0),
            "{states}"
        );
        let explained = ok(&cluster, "explain_node", serde_json::json!({"node": NODE})).await;
        assert_eq!(explained["state"], "healthy", "{explained}");
        let text = refused(
            &cluster,
            "explain_node",
            serde_json::json!({"node": "nope"}),
        )
        .await;
        assert!(text.contains(NODE), "names the nodes it knows: {text}");
        let text = refused(&cluster, "explain_node", serde_json::json!({})).await;
        assert!(text.contains("required"), "{text}");
        let answer = ok(&cluster, "detect", serde_json::json!({"range": "1m"})).await;
        assert_eq!(answer["answer"], "No", "{answer}");
        let diagnosis = ok(&cluster, "diagnose", serde_json::json!({"range": "1m"})).await;
        assert_eq!(
            diagnosis["component"],
            serde_json::Value::Null,
            "{diagnosis}"
        );
        let text = refused(
            &cluster,
            "diagnose",
            serde_json::json!({"range": "ten minutes"}),
        )
        .await;
        assert!(text.contains("PromQL duration"), "{text}");
        let top = ok(&cluster, "top_workloads", serde_json::json!({})).await;
        assert_eq!(
            top["culprits"],
            serde_json::json!([]),
            "a healthy cluster names no culprit: {top}"
        );
        cluster.cancel().await.unwrap();
    });

    // Streamable HTTP: initialize, then list the tools in the session it opened.
    let mcp_address = format!("127.0.0.1:{}", free_port());
    let _server = Process::start(
        &workspace_binary("collector"),
        &["mcp", "--node", &node_url, "--http", &mcp_address],
        &[],
    );
    let url = format!("http://{mcp_address}/mcp");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let post = |session: Option<&str>, body: serde_json::Value| {
        let mut request = agent
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json");
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-06-18");
        }
        request.send(body.to_string())
    };
    let response = wait_for(Duration::from_secs(10), "MCP over HTTP", || {
        post(
            None,
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "nodestate-test", "version": "1"}}}),
        )
        .ok()
    });
    assert_eq!(response.status(), 200);
    let session = response
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_string();
    post(
        Some(&session),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .unwrap();
    let mut listed = post(
        Some(&session),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .unwrap();
    assert_eq!(listed.status(), 200);
    let body = listed.body_mut().read_to_string().unwrap();
    // A JSON body, or server-sent events whose data lines carry it.
    let message: serde_json::Value = serde_json::from_str(&body)
        .ok()
        .or_else(|| {
            body.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<serde_json::Value>(data.trim()).ok())
                .find(|message| message["id"] == 2)
        })
        .unwrap_or_else(|| panic!("no tools/list answer in {body}"));
    let mut names: Vec<&str> = message["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{message}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "detect",
            "diagnose",
            "explain_node",
            "node_states",
            "top_workloads"
        ]
    );
}
