//! Window records with a value the daemon could not read (`null`, a partial window): never
//! read as a number, never silently dropped as a column.

use model::read_table;

fn read(lines: &[&str]) -> Result<model::Table, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("windows.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    read_table(&path).map_err(|err| err.to_string())
}

#[test]
fn a_null_field_is_an_error_naming_its_line_wherever_it_is() {
    let whole = r#"{"timestamp":"2026-12-03T10:00:00Z","psi_io_some_pct":1.5,"ops_per_s":10}"#;
    let partial = r#"{"timestamp":"2026-12-03T10:00:05Z","psi_io_some_pct":null,"ops_per_s":11,"partial":true}"#;
    // First: the column is not dropped from every row because its first value is missing.
    let err = read(&[partial, whole]).unwrap_err();
    assert!(
        err.contains(":1:") && err.contains("`psi_io_some_pct` is null"),
        "{err}"
    );
    let err = read(&[whole, partial]).unwrap_err();
    assert!(
        err.contains(":2:") && err.contains("`psi_io_some_pct` is null"),
        "{err}"
    );
    let table = read(&[whole, whole]).unwrap();
    assert_eq!(table.columns, ["ops_per_s", "psi_io_some_pct"]);
}
