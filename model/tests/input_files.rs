//! Reading input files: bad inputs named by file and line, labels per row or as segments,
//! and the daemon's window records.

use model::{Labels, Model, ModelError, TrainOptions, read_table, read_tables, synthetic};

mod common;
use common::write;

#[test]
fn bad_inputs_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let nan = write(dir.path(), "nan.csv", "a,b\n1,2\n3,NaN\n");
    match read_table(&nan).unwrap_err() {
        ModelError::NonFinite {
            path, line, column, ..
        } => assert_eq!((path, line, column.as_str()), (nan.clone(), 3, "b")),
        other => panic!("{other}"),
    }
    let inf = write(dir.path(), "inf.csv", "a,b\n1,inf\n");
    assert!(matches!(
        read_table(&inf).unwrap_err(),
        ModelError::NonFinite { line: 2, .. }
    ));
    let ragged = write(dir.path(), "ragged.csv", "a,b\n1,2\n3,4,5\n");
    let err = read_table(&ragged).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Ragged {
                line: 3,
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}:3: 3 fields, but the header has 2", ragged.display())
    );
    let short = write(dir.path(), "short.csv", "a,b\n1\n");
    assert!(matches!(
        read_table(&short).unwrap_err(),
        ModelError::Ragged { line: 2, .. }
    ));
    let text = write(dir.path(), "text.csv", "a,b\n1,fast\n");
    assert!(
        read_table(&text)
            .unwrap_err()
            .to_string()
            .contains("text.csv:2: column `b`: `fast` is not a number")
    );
    let header_only = write(dir.path(), "empty.csv", "a,b\n");
    assert!(matches!(
        read_table(&header_only).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let nothing = write(dir.path(), "empty.jsonl", "\n\n");
    assert!(matches!(
        read_table(&nothing).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let no_numbers = write(dir.path(), "strings.jsonl", "{\"node\": \"a\"}\n");
    assert!(matches!(
        read_table(&no_numbers).unwrap_err(),
        ModelError::Empty { .. }
    ));
    let bad_json = write(dir.path(), "bad.jsonl", "{\"a\": 1}\n{\"a\": \n");
    assert!(matches!(
        read_table(&bad_json).unwrap_err(),
        ModelError::Input { line: 2, .. }
    ));
    let lacking = write(
        dir.path(),
        "lacking.jsonl",
        "{\"a\": 1, \"b\": 2}\n{\"a\": 1}\n",
    );
    let err = read_table(&lacking).unwrap_err();
    assert!(
        err.to_string().contains("lacking.jsonl:2: field `b`"),
        "{err}"
    );
    let absent = dir.path().join("absent.csv");
    assert!(matches!(
        read_table(&absent).unwrap_err(),
        ModelError::Io { .. }
    ));
}

#[test]
fn labels_per_row_or_as_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.csv",
        "timestamp,a\n2026-11-25T00:00:00Z,1\n2026-11-25T00:00:05Z,1\n2026-11-25T00:00:10Z,9\n",
    );
    let table = read_table(&input).unwrap();
    let per_row = write(dir.path(), "labels.csv", "label\n0\n0\n1\n");
    assert_eq!(
        Labels::read(&per_row)
            .unwrap()
            .per_row(&table, &per_row)
            .unwrap(),
        vec![false, false, true]
    );
    let segments = write(
        dir.path(),
        "segments.csv",
        "start,end\n2026-11-25T00:00:04Z,2026-11-25T00:00:06Z\n",
    );
    assert_eq!(
        Labels::read(&segments)
            .unwrap()
            .per_row(&table, &segments)
            .unwrap(),
        vec![false, true, false]
    );
    let too_few = write(dir.path(), "few.csv", "label\n0\n");
    let err = Labels::read(&too_few)
        .unwrap()
        .per_row(&table, &too_few)
        .unwrap_err();
    assert!(
        err.to_string().contains("1 labels for 3 input rows"),
        "{err}"
    );
    // A time column named the way some public sets name it is a time, not a feature.
    let minutes = write(dir.path(), "minutes.csv", "timestamp_(min),a\n0,1\n1,2\n");
    let minutes = read_table(&minutes).unwrap();
    assert_eq!(minutes.columns, vec!["a"]);
    assert_eq!(minutes.timestamps, vec![Some(0.0), Some(1.0)]);
    let unlabelled = write(dir.path(), "none.csv", "x\n0\n");
    assert!(Labels::read(&unlabelled).is_err());
}

#[test]
fn window_records_become_features_and_nested_detail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<String> = synthetic::window_records(1, 40, 0..0)
        .iter()
        .map(|r| r.to_string())
        .collect();
    let path = write(dir.path(), "windows.jsonl", &(records.join("\n") + "\n"));
    let table = read_table(&path).unwrap();
    assert_eq!(table.len(), 40);
    for ignored in [
        "timestamp",
        "unix_ms",
        "window_s",
        "schema",
        "node",
        "block_devices",
    ] {
        assert!(!table.columns.iter().any(|c| c == ignored), "{ignored}");
    }
    assert!(table.columns.iter().any(|c| c == "block_latency_p99_us"));
    assert!(table.timestamps.iter().all(Option::is_some));
    let model = Model::train(&table, &TrainOptions::default()).unwrap();
    let names: Vec<&str> = model.feature_names().collect();
    for derived in [
        "block_error_fraction",
        "block_latency_p99_over_p50",
        "syscall_error_fraction",
        "file_open_error_fraction",
        "net_tx_error_fraction",
        "tcp_connect_failure_fraction",
        "proc_exits_nonzero_fraction",
        "sched_runqueue_latency_p99_over_p50",
    ] {
        assert!(names.contains(&derived), "{derived} in {names:?}");
    }
    // Several files: only the columns all of them have.
    let other = write(
        dir.path(),
        "other.jsonl",
        "{\"block_read_ops_per_s\": 3, \"extra\": 1}\n",
    );
    let (joined, dropped) = read_tables(&[path, other]).unwrap();
    assert_eq!(joined.columns, vec!["block_read_ops_per_s"]);
    assert_eq!(joined.len(), 41);
    assert!(dropped.contains(&"extra".to_string()));
    assert_eq!(joined.origin(40).1, 1);
}
