//! Redis connections, and Lua scripts run as Redis functions (loaded again when Redis lost them).

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::config::RedisUrl;

pub mod prelude;

/// Connects a small pool to Redis (standalone or cluster), failing fast when it is unreachable.
///
/// The pool reconnects by itself forever after the first successful connection, so a Redis
/// restart costs the calls in flight, not the process.
pub async fn connect(url: &RedisUrl, pool_size: usize) -> Result<Pool, fred::error::Error> {
    let config = match url {
        RedisUrl::Standalone(raw) => Config::from_url(raw)?,
        RedisUrl::Cluster(nodes) => Config {
            server: ServerConfig::new_clustered(
                nodes
                    .iter()
                    .filter_map(|n| n.rsplit_once(':'))
                    .filter_map(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .collect(),
            ),
            ..Config::default()
        },
    };
    let pool = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(5);
            c.max_command_attempts = 3;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(5);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build_pool(pool_size.max(1))?;
    // With a reconnect policy `init` would retry forever; an operator wants one clear error.
    match tokio::time::timeout(Duration::from_secs(5), pool.init()).await {
        Ok(Ok(_handle)) => Ok(pool),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let _ = pool.quit().await;
            Err(fred::error::Error::new(
                fred::error::ErrorKind::Timeout,
                format!("no answer from {url} within 5s"),
            ))
        }
    }
}

/// One Lua script, loaded from `lua/` at compile time (with the preludes its first line names,
/// see [`prelude`]), run as a Redis function.
///
/// Each script is its own function library (`FUNCTION LOAD`, named after the file and its
/// SHA1, so two builds never clash): the preludes' helpers are defined once, when the library
/// loads, where an `EVALSHA` ran every prelude again on each call (≈13 µs of Redis for the
/// inventory scripts' 61 helpers, docs/performance.md). Each call begins with the preludes'
/// per-call functions ([`prelude::library`]), so it sees what a fresh `EVAL` would.
///
/// Each service wraps every script it uses in one typed function, the only place that knows
/// the order of its KEYS and ARGV.
#[derive(Debug, Clone)]
pub struct LuaScript {
    /// File name under `lua/`, for logs and the registration test.
    pub name: &'static str,
    script: Script,
    function: String,
    library: String,
}

impl LuaScript {
    /// Wraps the source of `lua/<name>`, its preludes prepended ([`prelude::preludes`]).
    ///
    /// # Panics
    ///
    /// When the directive names an unknown prelude or a wrong order: a mistake in `lua/`, not
    /// input, caught before any release by the `every_lua_script_assembles` test that
    /// [`lua_scripts!`](crate::lua_scripts) adds to every crate registering scripts.
    pub fn new(name: &'static str, source: &'static str) -> Self {
        Self::assembled(name, source).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`LuaScript::new`], answering a bad directive as an error instead of a panic.
    pub fn assembled(name: &'static str, source: &str) -> Result<Self, prelude::PreludeError> {
        let preludes = prelude::preludes(name, source)?;
        let script = Script::from_lua(format!("{preludes}{source}"));
        let stem: String = name
            .trim_end_matches(".lua")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let function = format!("hf_{stem}_{}", &script.sha1()[..16]);
        let library = prelude::library(&function, &preludes, source);
        Ok(Self {
            name,
            script,
            function,
            library,
        })
    }

    /// The body `EVAL` runs: the preludes, then the script (what `lua/smoke.sh` and the
    /// benchmark's `redis-benchmark` baseline run).
    pub fn body(&self) -> &str {
        self.script.lua().map(|lua| &**lua).unwrap_or_default()
    }

    /// The SHA1 of [`Self::body`], as EVALSHA wants it.
    pub fn sha1(&self) -> &str {
        self.script.sha1()
    }

    /// The Redis function (and library) name: `hf_<file>_<the body's SHA1, 16 digits>`.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The code `FUNCTION LOAD` is given ([`prelude::library`]).
    pub fn library(&self) -> &str {
        &self.library
    }

    /// `FUNCTION LOAD REPLACE` on every primary (done at start-up, before health says
    /// SERVING). Replacing a library of the same name replaces it with the same code.
    pub async fn load(&self, client: &Client) -> Result<(), fred::error::Error> {
        client
            .function_load_cluster::<Value, _>(true, self.library.as_str())
            .await
            .map(drop)
    }

    /// `FCALL`, loading the library once and calling again when Redis does not know the
    /// function (a restarted or failed-over Redis, a primary added to a cluster).
    pub async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        match client
            .fcall::<R, _, _, _>(self.function.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(error) if error.details().contains("Function not found") => {
                self.load(client).await?;
                client.fcall(self.function.as_str(), keys, args).await
            }
            result => result,
        }
    }
}

/// Loads `scripts` on every primary (at start-up, before health says SERVING).
pub async fn load_scripts(client: &Client, scripts: &[&LuaScript]) -> Result<(), fred::error::Error> {
    for script in scripts {
        script.load(client).await?;
    }
    Ok(())
}

/// Declares a crate's Lua scripts: one `static NAME: LuaScript` per `NAME => "file.lua"`,
/// loaded from the workspace's `lua/` at compile time (preludes prepended), `pub fn all()`
/// listing them for start-up loading and the workspace test that every file in `lua/` is
/// registered once, and a unit test `every_lua_script_assembles` (every directive valid).
#[macro_export]
macro_rules! lua_scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            pub(crate) static $name: ::std::sync::LazyLock<$crate::redis::LuaScript> =
                ::std::sync::LazyLock::new(|| {
                    $crate::redis::LuaScript::new(
                        $file,
                        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../lua/", $file)),
                    )
                });
        )*
        /// Every script this crate runs, for loading at start-up and the registration test.
        pub fn all() -> Vec<&'static $crate::redis::LuaScript> {
            vec![$(&*$name),*]
        }

        #[cfg(test)]
        #[test]
        fn every_lua_script_assembles() {
            $(
                if let Err(error) = $crate::redis::LuaScript::assembled(
                    $file,
                    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../lua/", $file)),
                ) {
                    panic!("{error}");
                }
            )*
            assert!(all().iter().all(|script| !script.body().is_empty()));
        }
    };
}
