//! integrations/aiopslab's agent against the real `collector detect`: its Python tests run
//! here so `cargo xtask test` runs them (python3 is part of the machine's set-up).

use std::process::Command;

use integration_test::workspace_binary;

#[test]
fn the_aiopslab_agent_answers_detection_tasks_in_aiopslabs_format() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/aiopslab");
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(&dir)
        .env("NODESTATE_COLLECTOR", workspace_binary("collector"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs (`cargo xtask setup` installs it)");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    // The suite ran, not skipped: every test reported ok.
    assert!(report.contains("Ran 6 tests"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}
