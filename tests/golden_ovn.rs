//! Golden files of the OVN backend (the example's `ovn-nbctl` script and `transact` request).
//!
//! Regenerate after an intended change with `SGFLOWS_BLESS=1 cargo test --test golden_ovn`
//! and review the diff.

use std::path::Path;

use sgflows::{compile_ovn, load_model, InputFormat, OvnOptions, ParseOptions};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check(actual: &str, golden: &str) {
    let path = root().join(golden);
    if std::env::var_os("SGFLOWS_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "the example no longer compiles to {golden}; if intended, bless with SGFLOWS_BLESS=1"
    );
}

#[test]
fn two_tier_example_matches_ovn_goldens() {
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let out = compile_ovn(&model, &OvnOptions::default()).unwrap();
    check(&out.to_nbctl(), "tests/golden/two-tier.ovn.sh");
    let mut json = serde_json::to_string_pretty(&out.to_transact()).unwrap();
    json.push('\n');
    check(&json, "tests/golden/two-tier.ovn.json");
}
