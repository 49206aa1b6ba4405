//! Reading docs/PROTOCOL.md's ```vectors blocks for the unit tests that check a share of them
//! (the names under one prefix) against private code.

use std::collections::BTreeMap;

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// Every documented `name = value` whose name starts with `prefix`.
pub(crate) fn documented(prefix: &str) -> BTreeMap<String, String> {
    chatroom_crypto::internal::documented_vectors(PROTOCOL_MD)
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Panics, printing the computed block, unless `doc` holds exactly the `computed` values.
pub(crate) fn check(doc: &BTreeMap<String, String>, computed: &[(&str, String)]) {
    let block: String = computed.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    for (key, value) in computed {
        assert_eq!(doc.get(*key), Some(value), "vector {key}; computed block:\n{block}");
    }
    assert_eq!(doc.len(), computed.len(), "docs/PROTOCOL.md documents vectors not computed:\n{block}");
}
