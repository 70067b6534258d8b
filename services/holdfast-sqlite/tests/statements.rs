//! Statements stay compiled on every connection a `Db` opens (`holdfast_sqlite::connection`):
//! a cached statement whose plan could depend on its bound values is not compiled again when
//! they change, and a connection that runs more distinct statements than rusqlite's default
//! cache (16) still finds each one compiled on its next call. SQLite's own per-statement
//! counters tell: `SQLITE_STMTSTATUS_REPREPARE` counts recompilations of one statement,
//! `SQLITE_STMTSTATUS_RUN` the runs of the compiled statement the cache handed back (0 for one
//! compiled afresh).

use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::{Connection, StatementStatus, params};

fn open(path: &std::path::Path) -> Db {
    Db::open(Some(path), Options::default(), |conn: &mut Connection| {
        conn.execute_batch(
            "CREATE TABLE warehouses (id TEXT PRIMARY KEY, region TEXT NOT NULL, active INTEGER NOT NULL);
             CREATE INDEX warehouses_by_region ON warehouses (region, id);
             INSERT INTO warehouses VALUES ('a', 'eu', 1), ('b', 'us', 0), ('c', 'eu', 1), ('d', 'us', 1);",
        )
        .map_err(Failure::from)
    })
    .expect("open the database")
}

/// The shape of a page query of the store: a cursor, an optional filter, a flag and a limit,
/// all bound.
const PAGE: &str = "SELECT id FROM warehouses
     WHERE id > ?1 AND (?2 IS NULL OR region = ?2) AND (?3 OR active)
     ORDER BY id LIMIT ?4";

/// Runs [`PAGE`] with each of `binds` in turn; answers the pages and how often the statement
/// was compiled again.
fn pages(
    conn: &Connection,
    binds: &[(&str, Option<&str>, bool, i64)],
) -> rusqlite::Result<(Vec<Vec<String>>, i32)> {
    let mut out = Vec::new();
    for (after, region, all, limit) in binds {
        let mut statement = conn.prepare_cached(PAGE)?;
        let ids = statement
            .query_map(params![after, region, all, limit], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(ids);
    }
    let reprepared = conn.prepare_cached(PAGE)?.get_status(StatementStatus::RePrepare);
    Ok((out, reprepared))
}

const BINDS: &[(&str, Option<&str>, bool, i64)] = &[
    ("", None, true, 10),
    ("", Some("eu"), true, 1),
    ("a", Some("us"), false, 5),
    ("", None, false, 2),
    ("b", None, true, 100),
];

fn expected() -> Vec<Vec<String>> {
    let ids = |list: &[&str]| list.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    vec![
        ids(&["a", "b", "c", "d"]),
        ids(&["a"]),
        ids(&["d"]),
        ids(&["a", "c"]),
        ids(&["c", "d"]),
    ]
}

#[tokio::test]
async fn a_cached_statement_is_not_compiled_again_when_its_bound_values_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir.path().join("db.sqlite"));

    let (read_pages, read_reprepared) = db
        .read(|conn| pages(conn, BINDS).map_err(Failure::from))
        .await
        .expect("pages on a reader");
    assert_eq!(
        read_pages,
        expected(),
        "every page is right on a reader connection"
    );
    assert_eq!(
        read_reprepared, 0,
        "the reader compiled the page query again on a new bound value"
    );

    let (write_pages, write_reprepared) = db
        .write(|conn| pages(conn, BINDS).map_err(Failure::from))
        .await
        .expect("pages on the writer");
    assert_eq!(write_pages, expected(), "every page is right on the writer");
    assert_eq!(
        write_reprepared, 0,
        "the writer compiled the page query again on a new bound value"
    );
}

#[tokio::test]
async fn a_connection_keeps_far_more_than_sixteen_statements_compiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir.path().join("db.sqlite"));
    // 200 distinct statements (the store's writer runs well over a hundred), each run once,
    // then each asked for again: the cache must hand back the statement that already ran.
    let statements: Vec<String> = (0..200)
        .map(|n| format!("SELECT count(*) + {n} FROM warehouses WHERE region = ?1"))
        .collect();
    let runs = db
        .write(move |conn| {
            let mut sums = 0_i64;
            for sql in &statements {
                sums += conn
                    .prepare_cached(sql)?
                    .query_row(["eu"], |row| row.get::<_, i64>(0))?;
            }
            let mut runs_before = Vec::new();
            for sql in &statements {
                let mut statement = conn.prepare_cached(sql)?;
                runs_before.push(statement.get_status(StatementStatus::Run));
                sums -= statement.query_row(["eu"], |row| row.get::<_, i64>(0))?;
            }
            assert_eq!(sums, 0, "the second pass answers what the first did");
            Ok::<_, Failure>(runs_before)
        })
        .await
        .expect("statements on the writer");
    let compiled_afresh = runs.iter().filter(|runs| **runs == 0).count();
    assert_eq!(
        compiled_afresh, 0,
        "{compiled_afresh} of 200 statements were compiled again on their second call"
    );
}
