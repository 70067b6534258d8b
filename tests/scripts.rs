//! Every file in `lua/` has exactly one typed wrapper in some service: a script nobody runs
//! is dead code, and one registered twice would have its KEYS/ARGV order written twice.

use std::collections::BTreeSet;

#[test]
fn every_lua_file_is_registered_exactly_once() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../lua");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("lua/ exists")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".lua"))
        .collect();
    let registered: Vec<&str> = holdfast_inventory::scripts::all()
        .into_iter()
        .chain(holdfast_inventory::regions::scripts::all())
        .chain(holdfast_catalog::cache::scripts::all())
        .chain(holdfast_cart::scripts::all())
        .chain(holdfast_platform::admission::scripts::all())
        .map(|s| s.name)
        .collect();
    let unique: BTreeSet<String> = registered.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "a script is registered twice: {registered:?}"
    );
    assert_eq!(on_disk, unique, "lua/ and the registered wrappers differ");
}
