//! Lua preludes: the helpers several scripts share, kept once in `lua/lib/<name>.lua` and
//! prepended to every script whose first line names them (`--! prelude: base, hold_index, bucket`).
//!
//! Redis Lua has no `require`, so the body Redis runs (and `EVALSHA` hashes) is the named
//! preludes, in that order, then the script file unchanged. `lua/README.md` has the convention;
//! `lua/smoke.sh` and `scripts/inventory_memory.py` assemble bodies by the same rules.

/// The first-line directive naming a script's (or a prelude's own) preludes.
const DIRECTIVE: &str = "--! prelude:";

/// A prelude's line naming a function that forgets the state the prelude keeps for one call
/// (`--! per call: rec_call_begin`): a function library calls it first in every call.
const PER_CALL: &str = "--! per call:";

/// Every prelude under `lua/lib/`, compiled in. A prelude needing another names it in its own
/// first line, with the same directive.
pub const PRELUDES: &[(&str, &str)] = &[
    ("base", include_str!("../../../../lua/lib/base.lua")),
    ("hold_index", include_str!("../../../../lua/lib/hold_index.lua")),
    ("bucket", include_str!("../../../../lua/lib/bucket.lua")),
    (
        "bucket_purge",
        include_str!("../../../../lua/lib/bucket_purge.lua"),
    ),
    ("cart", include_str!("../../../../lua/lib/cart.lua")),
    ("cart_view", include_str!("../../../../lua/lib/cart_view.lua")),
    ("gcra", include_str!("../../../../lua/lib/gcra.lua")),
];

/// Why a script's directive cannot be honoured: always a mistake in `lua/`, never input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreludeError {
    /// The directive names no file of `lua/lib/`.
    #[error("{script}: unknown prelude {name:?} (no lua/lib/{name}.lua)")]
    Unknown {
        /// The script's file name.
        script: String,
        /// The name given.
        name: String,
    },
    /// A prelude is named before one it needs (or without it).
    #[error("{script}: prelude {name:?} needs {needs:?} named before it")]
    Order {
        /// The script's file name.
        script: String,
        /// The prelude named too early.
        name: String,
        /// What it needs first.
        needs: String,
    },
    /// A prelude is named twice.
    #[error("{script}: prelude {name:?} named twice")]
    Twice {
        /// The script's file name.
        script: String,
        /// The name repeated.
        name: String,
    },
}

/// The preludes `source`'s first line names, in order (none without a directive).
pub fn named(source: &str) -> Vec<&str> {
    let first = source.lines().next().unwrap_or_default();
    match first.strip_prefix(DIRECTIVE) {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => Vec::new(),
    }
}

/// The source of the prelude called `name`.
pub fn source(name: &str) -> Option<&'static str> {
    PRELUDES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The body `EVAL` runs for `script` (its file name, for errors) with source `source`: the
/// preludes its directive names, in order, then `source` unchanged.
pub fn assemble(script: &str, source: &str) -> Result<String, PreludeError> {
    let mut body = preludes(script, source)?;
    body.push_str(source);
    Ok(body)
}

/// The preludes `source`'s directive names, in order, each ending in a newline: what
/// [`assemble`] puts before the script and [`library`] before its function. Refuses an
/// unknown name, one named twice, or one named before a prelude it needs.
pub fn preludes(script: &str, source: &str) -> Result<String, PreludeError> {
    let names = named(source);
    let mut body = String::new();
    for (i, &name) in names.iter().enumerate() {
        let prelude = self::source(name).ok_or_else(|| PreludeError::Unknown {
            script: script.to_string(),
            name: name.to_string(),
        })?;
        if names[..i].contains(&name) {
            return Err(PreludeError::Twice {
                script: script.to_string(),
                name: name.to_string(),
            });
        }
        if let Some(needs) = named(prelude).into_iter().find(|n| !names[..i].contains(n)) {
            return Err(PreludeError::Order {
                script: script.to_string(),
                name: name.to_string(),
                needs: needs.to_string(),
            });
        }
        body.push_str(prelude);
        if !prelude.ends_with('\n') {
            body.push('\n');
        }
    }
    Ok(body)
}

/// The functions that begin a call of a script whose preludes are `names` (already checked
/// by [`preludes`]): each prelude's `--! per call:` lines, in the preludes' order.
fn per_call_functions(names: &[&str]) -> Vec<&'static str> {
    names
        .iter()
        .filter_map(|name| self::source(name))
        .flat_map(|prelude| prelude.lines().filter_map(|line| line.strip_prefix(PER_CALL)))
        .map(str::trim)
        .collect()
}

/// The Redis function library registering one function called `function` for a script with
/// source `source` and its [`preludes`]: the preludes run once when the library loads, the
/// script is the function's body (`KEYS` and `ARGV` its arguments, as EVAL gives them), and
/// each call begins with the preludes' per-call functions, so nothing one call kept reaches
/// the next. `function` must be a valid Redis function name (letters, digits, `_`).
pub fn library(function: &str, preludes: &str, source: &str) -> String {
    let mut code = format!(
        "#!lua name={function}\n{preludes}redis.register_function('{function}', function(KEYS, ARGV)\n"
    );
    for begin in per_call_functions(&named(source)) {
        code.push_str(begin);
        code.push_str("()\n");
    }
    code.push_str(source);
    if !source.ends_with('\n') {
        code.push('\n');
    }
    code.push_str("end)\n");
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::LuaScript;
    use fred::types::scripts::Script;

    const RESERVE: &str = include_str!("../../../../lua/reserve.lua");

    #[test]
    fn assemble_puts_the_named_preludes_first_in_order() {
        let expected = [
            source("base").unwrap(),
            source("hold_index").unwrap(),
            source("bucket").unwrap(),
            source("bucket_purge").unwrap(),
            RESERVE,
        ]
        .concat();
        let script = LuaScript::new("reserve.lua", RESERVE);
        assert_eq!(script.body(), expected);
        assert!(script.body().starts_with("-- lib/base.lua"));
        assert!(script.body().ends_with(RESERVE));
        // EVALSHA names the assembled body, not the file.
        let (body, file) = (Script::from_lua(expected), Script::from_lua(RESERVE));
        assert_eq!(script.sha1(), &**body.sha1());
        assert_ne!(script.sha1(), &**file.sha1());
    }

    #[test]
    fn assemble_leaves_a_script_without_directive_unchanged() {
        let source = "-- plain.lua: KEYS[1] ...\nreturn 1\n";
        assert_eq!(assemble("plain.lua", source).unwrap(), source);
        assert!(named(source).is_empty());
    }

    #[test]
    fn assemble_refuses_an_unknown_prelude() {
        let err = assemble("x.lua", "--! prelude: base, nope\nreturn 1\n").unwrap_err();
        assert_eq!(
            err,
            PreludeError::Unknown {
                script: "x.lua".into(),
                name: "nope".into()
            }
        );
        assert!(err.to_string().contains("unknown prelude \"nope\""));
    }

    #[test]
    fn assemble_refuses_a_prelude_before_what_it_needs() {
        let err = assemble("x.lua", "--! prelude: bucket, base\nreturn 1\n").unwrap_err();
        assert_eq!(
            err,
            PreludeError::Order {
                script: "x.lua".into(),
                name: "bucket".into(),
                needs: "base".into()
            }
        );
        assert!(matches!(
            assemble("x.lua", "--! prelude: base, hold_index, bucket_purge\n"),
            Err(PreludeError::Order { needs, .. }) if needs == "bucket"
        ));
    }

    #[test]
    fn assemble_refuses_a_prelude_named_twice() {
        assert!(matches!(
            assemble("x.lua", "--! prelude: base, cart, base\n"),
            Err(PreludeError::Twice { name, .. }) if name == "base"
        ));
    }

    #[test]
    #[should_panic(expected = "bad.lua: unknown prelude \"nope\"")]
    fn lua_script_new_refuses_an_unknown_prelude_at_load() {
        let _ = LuaScript::new("bad.lua", "--! prelude: nope\nreturn 1\n");
    }

    #[test]
    fn preludes_table_matches_lua_lib_and_each_needs_only_earlier_ones() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lua/lib");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("lua/lib exists")
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".lua").map(String::from))
            .collect();
        on_disk.sort();
        let mut table: Vec<String> = PRELUDES.iter().map(|(n, _)| n.to_string()).collect();
        table.sort();
        assert_eq!(on_disk, table, "lua/lib/ and PRELUDES differ");
        for (i, (name, source)) in PRELUDES.iter().enumerate() {
            for need in named(source) {
                assert!(
                    PRELUDES[..i].iter().any(|(n, _)| *n == need),
                    "{name} needs {need}, which is not an earlier prelude"
                );
            }
        }
    }
}
