//! Pins left by another version: a list pinned before rules had a boot-time deadline is moved
//! to the current layout (every rule kept) the first time it is opened, and any other layout
//! is refused with advice that works. The old-layout maps are made here with bpf(2) directly,
//! as the previous version made them (key/value sizes, entries, flags).

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use integration_test::{netns::TestPinDir, privileged, workspace_binary};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> i64 {
    // SAFETY: `attr` is a live bpf_attr prefix of the size passed.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    assert!(rc >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
    rc
}

/// Creates a map and pins it at `path`; returns its descriptor.
fn pinned_map(path: &Path, kind: u32, key: u32, value: u32, entries: u32, flags: u32) -> OwnedFd {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let fd = bpf(
        BPF_MAP_CREATE,
        &mut Create {
            map_type: kind,
            key_size: key,
            value_size: value,
            max_entries: entries,
            map_flags: flags,
        },
    );
    // SAFETY: the kernel just returned this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let name = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    bpf(
        BPF_OBJ_PIN,
        &mut Pin {
            pathname: name.as_ptr() as u64,
            bpf_fd: fd.as_raw_fd() as u32,
            file_flags: 0,
        },
    );
    fd
}

fn update(map: &OwnedFd, key: &[u8], value: &[u8]) {
    #[repr(C)]
    struct Update {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &mut Update {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags: 0,
        },
    );
}

/// An old-layout rule: id, flags, added, expires (Unix s), 64 bytes of comment.
fn legacy_rule(id: u32, flags: u32, added: u64, expires: u64, comment: &str) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&id.to_ne_bytes());
    value.extend_from_slice(&flags.to_ne_bytes());
    value.extend_from_slice(&added.to_ne_bytes());
    value.extend_from_slice(&expires.to_ne_bytes());
    let mut text = [0u8; 64];
    text[..comment.len()].copy_from_slice(comment.as_bytes());
    value.extend_from_slice(&text);
    assert_eq!(value.len(), 88);
    value
}

/// The seven maps as the previous version pinned them, rule size `rule_bytes`; returns the
/// IPv4 and IPv6 A tries.
fn old_pins(dir: &Path, rule_bytes: u32) -> (OwnedFd, OwnedFd) {
    std::fs::create_dir_all(dir).unwrap();
    let trie = |name: &str, key: u32| {
        pinned_map(
            &dir.join(name),
            BPF_MAP_TYPE_LPM_TRIE,
            key,
            rule_bytes,
            131_072,
            BPF_F_NO_PREALLOC,
        )
    };
    let v4 = trie("BLOCKLIST_V4_A", 8);
    trie("BLOCKLIST_V4_B", 8);
    let v6 = trie("BLOCKLIST_V6_A", 20);
    trie("BLOCKLIST_V6_B", 20);
    pinned_map(
        &dir.join("BLOCKLIST_ACTIVE"),
        BPF_MAP_TYPE_ARRAY,
        4,
        4,
        1,
        0,
    );
    pinned_map(
        &dir.join("BLOCKLIST_HITS"),
        BPF_MAP_TYPE_PERCPU_HASH,
        4,
        16,
        262_144,
        BPF_F_NO_PREALLOC,
    );
    pinned_map(
        &dir.join("BLOCKLIST_TOTALS"),
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        8,
        4,
        0,
    );
    (v4, v6)
}

fn blocklist(pins: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_binary("collector"))
        .arg("blocklist")
        .arg("--pin-dir")
        .arg(pins)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_list_pinned_by_the_previous_version_is_moved_with_every_rule() {
    if !privileged("a_list_pinned_by_the_previous_version_is_moved_with_every_rule") {
        return;
    }
    let pins = TestPinDir::new("fixa-legacy");
    let (v4, v6) = old_pins(&pins.path, 88);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut key = 24u32.to_ne_bytes().to_vec();
    key.extend_from_slice(&[10, 200, 9, 0]);
    update(
        &v4,
        &key,
        &legacy_rule(7, 1, now - 60, now + 3600, "flood, kept"),
    );
    let mut key = 64u32.to_ne_bytes().to_vec();
    key.extend_from_slice(&"fd00:209::".parse::<std::net::Ipv6Addr>().unwrap().octets());
    update(&v6, &key, &legacy_rule(9, 0, now - 30, 0, "by hand"));
    drop((v4, v6));

    let output = blocklist(&pins.path, &["list", "--output", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rules = listed["rules"].as_array().unwrap();
    let summary: Vec<_> = rules
        .iter()
        .map(|rule| {
            (
                rule["rule"].as_str().unwrap().to_string(),
                rule["id"].as_u64().unwrap(),
                rule["comment"].as_str().unwrap().to_string(),
                rule["automatic"].as_bool().unwrap(),
                rule["added_unix_s"].as_u64().unwrap(),
                rule["expires_unix_s"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "10.200.9.0/24".into(),
                7,
                "flood, kept".into(),
                true,
                now - 60,
                Some(now + 3600)
            ),
            (
                "fd00:209::/64".into(),
                9,
                "by hand".into(),
                false,
                now - 30,
                None
            ),
        ]
    );
    // Now in this version's layout: edits and the program work on it.
    let output = blocklist(&pins.path, &["add", "10.200.10.0/24", "--ttl", "1h"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut xdp = collector::xdp::XdpBlocklist::load(&pins.path).expect("loading");
    assert_eq!(xdp.blocklist.list().unwrap().len(), 3);
    let frame = {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[10, 200, 9, 1, 10, 200, 0, 2]);
        frame.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
        frame
    };
    assert_eq!(
        xdp.test_run(&frame).unwrap(),
        1,
        "the moved rule does not drop"
    );
}

#[test]
fn a_pin_of_an_unknown_layout_is_refused_with_advice() {
    if !privileged("a_pin_of_an_unknown_layout_is_refused_with_advice") {
        return;
    }
    let pins = TestPinDir::new("fixa-unknown-layout");
    drop(old_pins(&pins.path, 72));
    let output = blocklist(&pins.path, &["add", "192.0.2.1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("does not have the layout")
            && stderr.contains("list > rules.txt`")
            && stderr.contains("import rules.txt`"),
        "{stderr}"
    );
    // Refused without touching the pins.
    for name in ["BLOCKLIST_V4_A", "BLOCKLIST_ACTIVE", "BLOCKLIST_TOTALS"] {
        assert!(pins.path.join(name).exists(), "{name} was removed");
    }
    // detach works on a directory of any layout (nothing attached here: nothing to do).
    let output = blocklist(&pins.path, &["detach", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
