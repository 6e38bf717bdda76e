//! `collector blocklist …` end to end: every bad input fails with a clear message and a
//! non-zero exit, and leaves the pinned list exactly as it was.

use std::{path::Path, process::Command};

use integration_test::{netns::TestPinDir, privileged, workspace_binary};

fn blocklist(pins: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running collector blocklist")
}

/// The rules (without ages, which tick) as `list --output json` shows them.
fn rules(pins: &Path) -> Vec<serde_json::Value> {
    let output = blocklist(pins, &["list", "--output", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            serde_json::json!({
                "rule": rule["rule"],
                "comment": rule["comment"],
                "expires": rule["expires_unix_s"].is_u64(),
            })
        })
        .collect()
}

fn ok(pins: &Path, args: &[&str]) {
    let output = blocklist(pins, args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn blocklist_cli_edits_and_lists_rules() {
    if !privileged("blocklist_cli_edits_and_lists_rules") {
        return;
    }
    let pins = TestPinDir::new("cli-edit");
    ok(
        &pins.path,
        &[
            "add",
            "10.200.0.0/16",
            "fd00:200::5",
            "--comment",
            "scanner",
            "--ttl",
            "1h",
        ],
    );
    ok(&pins.path, &["add", "192.0.2.1"]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&pins.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "pin directory mode {mode:o}");
    assert_eq!(
        rules(&pins.path),
        vec![
            serde_json::json!({"rule": "10.200.0.0/16", "comment": "scanner", "expires": true}),
            serde_json::json!({"rule": "192.0.2.1/32", "comment": "", "expires": false}),
            serde_json::json!({"rule": "fd00:200::5/128", "comment": "scanner", "expires": true}),
        ]
    );
    let table = blocklist(&pins.path, &["list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("RULE") && table.contains("10.200.0.0/16"),
        "{table}"
    );
    ok(&pins.path, &["del", "192.0.2.1/32", "10.200.0.0/16"]);
    assert_eq!(rules(&pins.path).len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.txt");
    std::fs::write(
        &file,
        "# hostile ranges\n198.51.100.0/24\n\n2001:db8::/32 # v6\n",
    )
    .unwrap();
    ok(&pins.path, &["import", file.to_str().unwrap()]);
    assert_eq!(rules(&pins.path).len(), 3);
    std::fs::write(&file, "203.0.113.0/24\n").unwrap();
    ok(&pins.path, &["import", "--replace", file.to_str().unwrap()]);
    let now: Vec<_> = rules(&pins.path)
        .iter()
        .map(|r| r["rule"].clone())
        .collect();
    assert_eq!(now, vec![serde_json::json!("203.0.113.0/24")]);
    ok(&pins.path, &["flush"]);
    assert!(rules(&pins.path).is_empty());
}

#[test]
fn blocklist_cli_bad_input_changes_nothing() {
    if !privileged("blocklist_cli_bad_input_changes_nothing") {
        return;
    }
    let pins = TestPinDir::new("cli-bad");
    ok(
        &pins.path,
        &["add", "10.200.0.0/16", "fd00:200::/64", "--comment", "keep"],
    );
    let before = rules(&pins.path);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let bad_lines = file(
        "bad.txt",
        "192.0.2.0/24\n# fine\nnot-an-ip\n10.0.0.1/8\n192.0.2.0/24\n",
    );
    let duplicate_listed = file("dup.txt", "192.0.2.0/24\n10.200.0.0/16\n");
    let too_many: String = (0..=collector_common::xdp::MAX_RULES)
        .map(|n| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + n)))
        .collect();
    let too_many = file("full.txt", &too_many);
    let long_comment = "x".repeat(65);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["add", "10.200.1.1/16"],
            vec!["host bits", "10.200.0.0/16"],
        ),
        (vec!["add", "10.200.300.1"], vec!["not an address"]),
        (vec!["add", "fd00:200::/129"], vec!["not an address"]),
        (vec!["add", "192.0.2.1", "192.0.2.1"], vec!["twice"]),
        (vec!["add", "192.0.2.1", "nope"], vec!["argument 2", "nope"]),
        (
            vec!["add", "192.0.2.1", "--comment", &long_comment],
            vec!["65 bytes"],
        ),
        (
            vec!["add", "192.0.2.1", "--ttl", "soon"],
            vec!["not a duration"],
        ),
        (vec!["del", "192.0.2.1"], vec!["not listed"]),
        (
            vec!["del", "10.200.0.0/16", "10.9.0.0/16"],
            vec!["10.9.0.0/16 is not listed"],
        ),
        (
            vec!["import", &bad_lines],
            vec![
                "3 bad lines",
                "line 3",
                "not-an-ip",
                "line 4",
                "host bits",
                "line 5",
                "twice",
            ],
        ),
        (vec!["import", "--replace", &bad_lines], vec!["line 3"]),
        (
            vec!["import", &duplicate_listed],
            vec!["10.200.0.0/16 is already listed"],
        ),
        (vec!["import", &too_many], vec!["full", "131072"]),
        (vec!["import", "--replace", &too_many], vec!["full"]),
        (
            vec!["import", "/nonexistent/list"],
            vec!["/nonexistent/list"],
        ),
    ];
    for (args, expected) in &cases {
        let output = blocklist(&pins.path, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: `{text}` not in: {stderr}");
        }
        assert_eq!(rules(&pins.path), before, "{args:?} changed the list");
    }
}

#[test]
fn blocklist_cli_without_rights_says_so() {
    if !privileged("blocklist_cli_without_rights_says_so") {
        return;
    }
    let pins = TestPinDir::new("cli-rights");
    ok(&pins.path, &["add", "10.200.0.0/16"]);
    for args in [vec!["list"], vec!["add", "192.0.2.1"], vec!["flush"]] {
        let output = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(workspace_binary("collector"))
            .arg("blocklist")
            .arg("--pin-dir")
            .arg(&pins.path)
            .args(&args)
            .output()
            .expect("running setpriv");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} allowed without rights");
        assert!(
            stderr.contains("only by root") && stderr.contains("CAP_BPF"),
            "{stderr}"
        );
    }
    assert_eq!(rules(&pins.path).len(), 1);
}

#[test]
fn blocklist_cli_refuses_a_ttl_past_ten_years_and_takes_one_up_to_it() {
    if !privileged("blocklist_cli_refuses_a_ttl_past_ten_years_and_takes_one_up_to_it") {
        return;
    }
    let pins = TestPinDir::new("fixa-ttl");
    ok(&pins.path, &["add", "198.51.100.1"]);
    for ttl in ["18446744073709551615s", "3651d"] {
        let output = blocklist(&pins.path, &["add", "198.51.100.88", "--ttl", ttl]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--ttl {ttl} was taken: {stderr}");
        assert!(
            stderr.contains("longer than the maximum of 3650 days"),
            "{stderr}"
        );
    }
    assert_eq!(
        rules(&pins.path),
        vec![serde_json::json!({"rule": "198.51.100.1/32", "comment": "", "expires": false})]
    );
    // Exactly the maximum is taken, and expires in ten years, not now.
    ok(&pins.path, &["add", "198.51.100.88", "--ttl", "3650d"]);
    let output = blocklist(&pins.path, &["list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rule = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["rule"] == "198.51.100.88/32")
        .expect("the rule with the longest TTL is listed");
    let in_s = rule["expires_unix_s"].as_u64().unwrap() - rule["added_unix_s"].as_u64().unwrap();
    assert_eq!(in_s, 3650 * 24 * 3600);
}

#[test]
fn blocklist_cli_names_each_bad_line_and_shows_what_is_there() {
    if !privileged("blocklist_cli_names_each_bad_line_and_shows_what_is_there") {
        return;
    }
    let pins = TestPinDir::new("cli-lines");
    ok(&pins.path, &["add", "10.200.0.0/16", "fd00:200::/64"]);
    let before = rules(&pins.path);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let listed_twice = file(
        "listed.txt",
        "192.0.2.0/24\n10.200.0.0/16\n# fine\nfd00:200::/64\n",
    );
    let invisible = file("invisible.txt", "10.0.0.1\0\n10.0.0.2\u{feff}\n");
    let huge = file(
        "huge.txt",
        &format!("192.0.2.0/24\n{}\n", "7".repeat(10 << 20)),
    );
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["add", ""], vec!["argument 1", "empty"]),
        (vec!["add", "192.0.2.9", " "], vec!["argument 2", "empty"]),
        (vec!["del", ""], vec!["argument 1", "empty"]),
        (
            vec!["add", "192.0.2.9", "192.0.2.9/32"],
            vec!["argument 2: 192.0.2.9/32 is given twice (also as argument 1)"],
        ),
        (
            vec!["import", &listed_twice],
            vec![
                "2 bad lines",
                "line 2: 10.200.0.0/16 is already listed",
                "line 4: fd00:200::/64 is already listed",
            ],
        ),
        (
            vec!["import", &invisible],
            vec!["line 1: `10.0.0.1\\0`", "line 2: `10.0.0.2\\u{feff}`"],
        ),
        (vec!["import", &huge], vec!["line 2", "more characters)"]),
        (
            vec!["add", "192.0.2.9", "--comment", "two\nlines"],
            vec!["control characters", "`two\\nlines`"],
        ),
        (
            vec!["add", "192.0.2.9", "--comment", "\u{1b}[2Jwiped"],
            vec!["control characters", "\\u{1b}[2Jwiped"],
        ),
    ];
    for (args, expected) in &cases {
        let output = blocklist(&pins.path, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: `{text}` not in: {stderr}");
        }
        assert!(
            !stderr.contains('\u{1b}') && !stderr.contains('\0'),
            "{args:?}: raw control characters in: {stderr:?}"
        );
        assert!(
            stderr.len() < 2000,
            "{args:?}: {} bytes of error",
            stderr.len()
        );
        assert!(
            !stderr.contains("in this file") || args[0] == "import",
            "{args:?}: {stderr}"
        );
        assert_eq!(rules(&pins.path), before, "{args:?} changed the list");
    }

    // A comment with control characters already in the map (an older collector, or anything
    // else that can write it) is printed escaped.
    {
        let mut list = collector::xdp::Blocklist::open(&pins.path).unwrap();
        list.add(
            &["192.0.2.77/32".parse().unwrap()],
            Some("x\u{1b}[2J\ny"),
            None,
        )
        .unwrap();
    }
    let output = blocklist(&pins.path, &["list"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(table.contains("x\\u{1b}[2J\\ny"), "{table}");
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert_eq!(table.lines().count(), 4, "{table}");
}

#[test]
fn blocklist_cli_refused_or_read_only_commands_create_nothing() {
    if !privileged("blocklist_cli_refused_or_read_only_commands_create_nothing") {
        return;
    }
    let pins = TestPinDir::new("cli-nothing");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "nope\n").unwrap();
    let long_comment = "x".repeat(65);
    let refused: Vec<Vec<&str>> = vec![
        vec!["add", "nope"],
        vec!["add", ""],
        vec!["add", "192.0.2.1", "--comment", &long_comment],
        vec!["add", "192.0.2.1", "--comment", "a\tb"],
        vec!["import", bad.to_str().unwrap()],
        vec!["import", "--replace", bad.to_str().unwrap()],
        vec!["del", "192.0.2.1"],
    ];
    for args in &refused {
        let output = blocklist(&pins.path, args);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            !pins.path.exists(),
            "{args:?} was refused but created {}",
            pins.path.display()
        );
    }
    // Reading an absent list shows it empty, and leaves it absent.
    for args in [vec!["list"], vec!["flush"]] {
        ok(&pins.path, &args);
        assert!(
            !pins.path.exists(),
            "{args:?} created {}",
            pins.path.display()
        );
    }
    assert!(rules(&pins.path).is_empty());
    assert!(!pins.path.exists());
    // The first accepted edit creates it.
    ok(&pins.path, &["add", "192.0.2.1"]);
    assert!(pins.path.exists());
}

/// `bpf(cmd, attr)` with an attribute of plain integers; panics on failure.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> i64 {
    // SAFETY: `attr` is a #[repr(C)] struct of integers (pointers as u64) that the kernel reads
    // for `cmd`; every pointer in it refers to a live buffer of the right size.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    assert!(rc >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
    rc
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Creates and pins a map of another collector's layout, with `entries` (key, value) in it.
fn pin_map(
    path: &Path,
    map_type: u32,
    (key_size, value_size, max_entries, map_flags): (u32, u32, u32, u32),
    entries: &[(Vec<u8>, Vec<u8>)],
) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let fd = bpf(
        BPF_MAP_CREATE,
        &MapCreate {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
        },
    ) as u32;
    for (key, value) in entries {
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &MapElem {
                map_fd: fd,
                _pad: 0,
                key: key.as_ptr() as u64,
                value: value.as_ptr() as u64,
                flags: 0,
            },
        );
    }
    let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    bpf(
        BPF_OBJ_PIN,
        &ObjPin {
            pathname: path.as_ptr() as u64,
            bpf_fd: fd,
            file_flags: 0,
        },
    );
    // SAFETY: closing the descriptor we created; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn blocklist_cli_saves_the_rules_of_an_incompatible_layout_as_its_advice_says() {
    if !privileged("blocklist_cli_saves_the_rules_of_an_incompatible_layout_as_its_advice_says") {
        return;
    }
    use collector_common::xdp::names;
    const HASH_PERCPU: u32 = 5;
    const ARRAY: u32 = 2;
    const ARRAY_PERCPU: u32 = 6;
    const LPM_TRIE: u32 = 11;
    const NO_PREALLOC: u32 = 1;
    let pins = TestPinDir::new("cli-old-layout");
    std::fs::create_dir(&pins.path).unwrap();
    // Values of 24 bytes, not today's: an older collector's rules.
    let old_value = 24;
    let v4 = |addr: [u8; 4], len: u32| {
        (
            len.to_ne_bytes()
                .iter()
                .chain(&addr)
                .copied()
                .collect::<Vec<u8>>(),
            vec![7u8; old_value],
        )
    };
    let v6 = |addr: std::net::Ipv6Addr, len: u32| {
        (
            len.to_ne_bytes()
                .iter()
                .chain(&addr.octets())
                .copied()
                .collect::<Vec<u8>>(),
            vec![7u8; old_value],
        )
    };
    let trie = |name: &str, key: u32, entries: &[(Vec<u8>, Vec<u8>)]| {
        pin_map(
            &pins.path.join(name),
            LPM_TRIE,
            (key, old_value as u32, 1024, NO_PREALLOC),
            entries,
        );
    };
    // Set B is the live one; set A holds a stale rule an interrupted replace left.
    trie(names::V4[0], 8, &[v4([203, 0, 113, 0], 24)]);
    trie(
        names::V4[1],
        8,
        &[v4([198, 51, 100, 0], 24), v4([192, 0, 2, 7], 32)],
    );
    trie(names::V6[0], 20, &[]);
    trie(names::V6[1], 20, &[v6("2001:db8::".parse().unwrap(), 32)]);
    pin_map(
        &pins.path.join(names::ACTIVE),
        ARRAY,
        (4, 4, 1, 0),
        &[(0u32.to_ne_bytes().to_vec(), 1u32.to_ne_bytes().to_vec())],
    );
    pin_map(
        &pins.path.join(names::HITS),
        HASH_PERCPU,
        (4, 16, 1024, 0),
        &[],
    );
    pin_map(
        &pins.path.join(names::TOTALS),
        ARRAY_PERCPU,
        (4, 8, 4, 0),
        &[],
    );

    // Editing refuses, and says exactly what to run.
    let output = blocklist(&pins.path, &["add", "192.0.2.1"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    let dir = pins.path.display().to_string();
    let save = format!("collector blocklist --pin-dir {dir} list > rules.txt");
    let import = format!("collector blocklist --pin-dir {dir} import rules.txt");
    for text in [&save, &format!("rm -r {dir}"), &import] {
        assert!(stderr.contains(text.as_str()), "`{text}` not in: {stderr}");
    }

    // The advice, run as given: list works on the old layout and its output imports.
    let listed = blocklist(&pins.path, &["list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stderr).contains("comments, TTLs and counters"));
    let saved = tempfile::tempdir().unwrap();
    let file = saved.path().join("rules.txt");
    std::fs::write(&file, &listed.stdout).unwrap();
    let json = blocklist(&pins.path, &["list", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["rules"].as_array().unwrap().len(), 3, "{json}");
    std::fs::remove_dir_all(&pins.path).unwrap();
    ok(&pins.path, &["import", file.to_str().unwrap()]);
    let now: Vec<_> = rules(&pins.path)
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        now,
        ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"],
        "saved from set B only:\n{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}

/// `add` of rules already listed changes nothing and says so, with exit 0 (as `ip route
/// replace` users expect); the new ones among them are added.
#[test]
fn blocklist_add_of_a_listed_rule_is_a_no_op_that_says_so() {
    if !privileged("blocklist_add_of_a_listed_rule_is_a_no_op_that_says_so") {
        return;
    }
    let pins = TestPinDir::new("cli-noop");
    ok(
        &pins.path,
        &["add", "10.200.0.0/16", "fd00:200::/64", "--comment", "keep"],
    );
    let before = rules(&pins.path);
    let output = blocklist(&pins.path, &["add", "10.200.0.0/16", "--comment", "other"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("10.200.0.0/16 is already listed: left unchanged"),
        "{stderr}"
    );
    assert!(stderr.contains("added 0 rule(s)"), "{stderr}");
    assert_eq!(rules(&pins.path), before, "the listed rule changed");

    // Mixed: the new one is added, the listed ones are left as they are.
    let output = blocklist(
        &pins.path,
        &[
            "add",
            "192.0.2.9",
            "10.200.0.0/16",
            "fd00:200::/64",
            "--output",
            "json",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["added"], serde_json::json!(["192.0.2.9/32"]));
    assert_eq!(
        report["already_listed"],
        serde_json::json!(["10.200.0.0/16", "fd00:200::/64"])
    );
    let now = rules(&pins.path);
    assert_eq!(now.len(), 3, "{now:?}");
    for rule in &before {
        assert!(now.contains(rule), "{rule} changed: {now:?}");
    }
}

/// Every `blocklist` command prints one JSON document on stdout with `--output json`.
#[test]
fn blocklist_commands_print_json_with_output_json() {
    if !privileged("blocklist_commands_print_json_with_output_json") {
        return;
    }
    let pins = TestPinDir::new("cli-json");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.txt");
    std::fs::write(&file, "203.0.113.0/24\n# a comment\n2001:db8::/48\n").unwrap();
    let file = file.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let output = blocklist(&pins.path, &args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    };
    assert_eq!(
        json(&["add", "192.0.2.1"])["added"],
        serde_json::json!(["192.0.2.1/32"])
    );
    assert_eq!(json(&["import", file])["added"], 2);
    assert_eq!(json(&["list"])["rules"].as_array().unwrap().len(), 3);
    assert_eq!(
        json(&["del", "192.0.2.1"])["removed"],
        serde_json::json!(["192.0.2.1/32"])
    );
    assert_eq!(json(&["import", "--replace", file])["replaced_with"], 2);
    assert_eq!(json(&["flush"])["removed"], 2);
    assert_eq!(
        json(&["detach", "--all"])["detached"],
        serde_json::json!([])
    );
}
