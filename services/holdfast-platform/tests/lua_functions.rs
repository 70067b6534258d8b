//! Lua scripts run as Redis functions, against a real redis-server: a call runs the script,
//! a Redis that lost its functions (a restart without persistence, `FUNCTION FLUSH`) gets the
//! library again on the next call, and no state a prelude keeps for one call reaches the next
//! (the library stays loaded between calls, where each `EVAL` started afresh).

use fred::prelude::*;
use holdfast_platform::redis::{self, LuaScript};
use holdfast_testkit::RedisServer;

async fn client(server: &RedisServer) -> Pool {
    redis::connect(&server.url(), 1).await.expect("redis connects")
}

async fn run(script: &LuaScript, pool: &Pool, keys: &[&str], args: &[&str]) -> Value {
    script
        .run(
            pool.next(),
            keys.iter().map(|k| k.to_string()).collect(),
            args.iter().map(|a| Value::from(*a)).collect(),
        )
        .await
        .expect("the script runs")
}

#[tokio::test]
async fn a_script_runs_as_a_function_and_is_loaded_again_after_redis_lost_it() {
    let server = RedisServer::start().expect("redis-server");
    let pool = client(&server).await;
    let script = LuaScript::new(
        "echo_count.lua",
        "-- echo_count.lua\nreturn {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}\n",
    );
    script.load(pool.next()).await.expect("FUNCTION LOAD");
    let listed = server.cli(&["FUNCTION", "LIST"]).expect("FUNCTION LIST");
    assert!(listed.contains(script.function()), "{listed}");
    assert!(script.function().starts_with("hf_echo_count_"));

    let first = run(&script, &pool, &["k"], &["a"]).await;
    assert_eq!(first, Value::Array(vec!["k".into(), "a".into(), 1.into()]));

    assert_eq!(server.cli(&["FUNCTION", "FLUSH"]).expect("flush").trim(), "OK");
    let again = run(&script, &pool, &["k"], &["b"]).await;
    assert_eq!(again, Value::Array(vec!["k".into(), "b".into(), 2.into()]));
    let listed = server.cli(&["FUNCTION", "LIST"]).expect("FUNCTION LIST");
    assert!(listed.contains(script.function()), "loaded again: {listed}");

    // Loading again (every process does at start) replaces the library with the same code.
    script.load(pool.next()).await.expect("FUNCTION LOAD again");
    assert_eq!(
        run(&script, &pool, &["k"], &["c"]).await,
        Value::Array(vec!["k".into(), "c".into(), 3.into()])
    );
}

#[tokio::test]
async fn no_state_a_prelude_keeps_for_one_call_reaches_the_next() {
    let server = RedisServer::start().expect("redis-server");
    let pool = client(&server).await;
    // Each script reads what a prelude keeps for the call, then sets it as a call would: the
    // next call must see it unset again.
    let scripts = [
        LuaScript::new(
            "probe_view.lua",
            "--! prelude: base, hold_index, cart_view\n\
             local before = tostring(view_now)\nview_now = 42\nreturn before\n",
        ),
        LuaScript::new(
            "probe_records.lua",
            "--! prelude: base, hold_index, bucket\n\
             local before = tostring(rec_seen) .. ' ' .. tostring(rec_pool_n['7']) .. ' ' .. tostring(rec_counts)\n\
             rec_seen, rec_pool_n['7'] = {now = 1}, 3\nrec_count_defer()\nreturn before\n",
        ),
    ];
    let fresh = ["nil", "nil nil nil"];
    for (script, fresh) in scripts.iter().zip(fresh) {
        for call in 0..3 {
            let seen = run(script, &pool, &["k"], &[]).await;
            assert_eq!(seen, Value::from(fresh), "{} call {call}", script.name);
        }
    }
}
