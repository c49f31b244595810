//! `docs/model.md` lists the keys of every object kind; it must say what the reader does.

use std::collections::BTreeMap;

use sgflows::model::keys::{table, Kind};

/// The doc table's rows by object name: (read, documented extras, RPC extras).
fn doc_rows() -> BTreeMap<String, [Vec<String>; 3]> {
    let doc = include_str!("../docs/model.md");
    let start = doc
        .find("<!-- keys:begin")
        .expect("keys table start marker");
    let end = doc
        .find("<!-- keys:end -->")
        .expect("keys table end marker");
    let mut rows = BTreeMap::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        if cells[0] == "object" {
            continue;
        }
        let keys = |cell: &str| -> Vec<String> {
            cell.split(", ")
                .filter(|k| *k != "—")
                .map(|k| k.trim_matches('`').to_string())
                .collect()
        };
        rows.insert(
            cells[0].to_string(),
            [keys(cells[1]), keys(cells[2]), keys(cells[3])],
        );
    }
    rows
}

#[test]
fn the_documented_key_table_matches_the_reader() {
    let rows = doc_rows();
    assert_eq!(
        rows.len(),
        Kind::ALL.len(),
        "one row per kind: {:?}",
        rows.keys()
    );
    for kind in Kind::ALL {
        let row = rows
            .get(kind.name())
            .unwrap_or_else(|| panic!("no row for {}", kind.name()));
        let documented = table(kind, false);
        let rpc = table(kind, true);
        assert_eq!(
            documented.used,
            rpc.used,
            "{}: one list of keys read",
            kind.name()
        );
        assert_eq!(row[0], documented.used, "{}: keys read", kind.name());
        assert_eq!(
            row[1],
            documented.ignored,
            "{}: documented extras",
            kind.name()
        );
        assert_eq!(row[2], rpc.ignored, "{}: RPC extras", kind.name());
    }
}
