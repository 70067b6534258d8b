//! Every file in `lua/` has exactly one typed wrapper in some service: a script nobody runs
//! is dead code, and one registered twice would have its KEYS/ARGV order written twice. Each
//! loads into Redis as a function library.

use std::collections::BTreeSet;

fn registered() -> Vec<&'static holdfast_platform::redis::LuaScript> {
    holdfast_inventory::scripts::all()
        .into_iter()
        .chain(holdfast_inventory::regions::scripts::all())
        .chain(holdfast_catalog::cache::scripts::all())
        .chain(holdfast_cart::scripts::all())
        .chain(holdfast_platform::admission::scripts::all())
        .collect()
}

#[test]
fn every_lua_file_is_registered_exactly_once() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../lua");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("lua/ exists")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".lua"))
        .collect();
    let registered: Vec<&str> = registered().into_iter().map(|s| s.name).collect();
    let unique: BTreeSet<String> = registered.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "a script is registered twice: {registered:?}"
    );
    assert_eq!(on_disk, unique, "lua/ and the registered wrappers differ");
}

/// Every script compiles as a Redis function library on a real redis-server (Lua limits a
/// function's upvalues, which the preludes' helpers become), under its own name.
#[tokio::test]
async fn every_lua_script_loads_as_a_redis_function() {
    let server = holdfast_testkit::RedisServer::start().expect("redis-server");
    let pool = holdfast_platform::redis::connect(&server.url(), 1)
        .await
        .expect("redis connects");
    let scripts = registered();
    for script in &scripts {
        if let Err(error) = script.load(pool.next()).await {
            panic!("{}: {error}", script.name);
        }
    }
    let listed = server.cli(&["FUNCTION", "LIST"]).expect("FUNCTION LIST");
    for script in &scripts {
        assert!(listed.contains(script.function()), "{} not listed", script.name);
    }
}
