//! Pod names from a Kubernetes API (issue 20): the daemon's real client (kube-rs) talks to an
//! API this test serves over HTTP on loopback: a 403, then garbage, then a pod list, a watch
//! that drops after one event, and a watch that carries on. No root needed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use collector::workload::{
    PodNames,
    kube::{ApiSource, watch_pods},
};

const NODE: &str = "node-t20r-kube";

fn pod(name: &str, uid: &str, container_id: &str, version: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": uid,
            "resourceVersion": version.to_string(),
            "labels": {"pod-template-hash": "5f4d8"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5f4d8",
                "uid": "rs-1", "controller": true
            }]
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "app"}]},
        "status": {
            "containerStatuses": [{
                "name": "app", "containerID": format!("containerd://{container_id}"),
                "image": "app", "imageID": "", "ready": true, "restartCount": 0
            }]
        }
    })
}

const UID_A: &str = "aaaaaaaa-1111-4111-8111-000000000001";
const UID_B: &str = "bbbbbbbb-2222-4222-8222-000000000002";
const UID_C: &str = "cccccccc-3333-4333-8333-000000000003";

#[derive(Default)]
struct Api {
    requests: Mutex<Vec<String>>,
    lists: Mutex<u32>,
    watches: Mutex<u32>,
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve(api: Arc<Api>, mut stream: TcpStream, stop: Arc<AtomicBool>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    api.requests.lock().unwrap().push(target.clone());
    if !target.contains("watch=true") {
        let n = {
            let mut lists = api.lists.lock().unwrap();
            *lists += 1;
            *lists
        };
        match n {
            1 => respond(
                &mut stream,
                "403 Forbidden",
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:nodestate:nodestate\" cannot list resource \"pods\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#,
            ),
            2 => respond(&mut stream, "200 OK", "<html>this is no API</html>"),
            _ => {
                let list = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {"resourceVersion": "10"},
                    "items": [pod("web-5f4d8-aaaaa", UID_A, "a1a1a1a1a1a1", 9)]
                });
                respond(&mut stream, "200 OK", &list.to_string());
            }
        }
        return;
    }
    let n = {
        let mut watches = api.watches.lock().unwrap();
        *watches += 1;
        *watches
    };
    let (name, uid, id, version) = if n == 1 {
        ("web-5f4d8-bbbbb", UID_B, "b2b2b2b2b2b2", 11)
    } else {
        ("web-5f4d8-ccccc", UID_C, "c3c3c3c3c3c3", 12)
    };
    let event = serde_json::json!({"type": "ADDED", "object": pod(name, uid, id, version)});
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{event}\n"
    );
    let _ = stream.flush();
    if n == 1 {
        // The watch drops: the connection closes under the client.
        return;
    }
    let until = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_named_through_a_403_garbage_and_a_dropped_watch() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let api = Arc::new(Api::default());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (api, stop) = (api.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (api, stop) = (api.clone(), stop.clone());
                std::thread::spawn(move || serve(api, stream, stop));
            }
        });
    }
    let names = PodNames::default();
    let watch = tokio::spawn(watch_pods(
        ApiSource::Url(format!("http://{address}")),
        NODE.to_string(),
        names.clone(),
    ));

    // Until the API answers, the pod has no name (the resolver falls back to its UID) and
    // the failures are counted.
    let deadline = Instant::now() + Duration::from_secs(45);
    while names.get(UID_C).is_none() && Instant::now() < deadline {
        if names.get(UID_A).is_none() {
            assert!(names.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watch.abort();
    let requests = api.requests.lock().unwrap().clone();
    let a = names
        .get(UID_A)
        .unwrap_or_else(|| panic!("pod A listed: {requests:?}"));
    assert_eq!(
        (a.namespace.as_str(), a.name.as_str()),
        ("shop", "web-5f4d8-aaaaa")
    );
    assert_eq!(a.owner.as_deref(), Some("Deployment web"));
    assert_eq!(a.containers["a1a1a1a1a1a1"], "app");
    let b = names
        .get(UID_B)
        .expect("pod B, from the watch that dropped");
    assert_eq!(b.name, "web-5f4d8-bbbbb");
    let c = names
        .get(UID_C)
        .expect("pod C, from the watch after the drop");
    assert_eq!(c.containers["c3c3c3c3c3c3"], "app");
    assert!(
        names.api_errors() >= 2,
        "the 403 and the garbage are counted: {} ({requests:?})",
        names.api_errors()
    );
    assert!(*api.watches.lock().unwrap() >= 2, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|target| target.starts_with("/api/v1/pods?")
                && target.contains("fieldSelector=spec.nodeName%3Dnode-t20r-kube")),
        "{requests:?}"
    );
}
