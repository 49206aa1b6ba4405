//! Reading docs/PROTOCOL.md's ```vectors blocks for the unit tests that check a share of them
//! (the names under one prefix) against private code.

use std::collections::BTreeMap;

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// Every documented `name = value` whose name starts with `prefix`.
pub(crate) fn documented(prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in PROTOCOL_MD.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            inside = t == "```vectors";
            continue;
        }
        if let (true, Some((k, v))) = (inside, t.split_once(" = ")) {
            if k.trim().starts_with(prefix) {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    out
}

/// Panics, printing the computed block, unless `doc` holds exactly the `computed` values.
pub(crate) fn check(doc: &BTreeMap<String, String>, computed: &[(&str, String)]) {
    let block: String = computed.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    for (key, value) in computed {
        assert_eq!(doc.get(*key), Some(value), "vector {key}; computed block:\n{block}");
    }
    assert_eq!(doc.len(), computed.len(), "docs/PROTOCOL.md documents vectors not computed:\n{block}");
}
