//! Credentials out of anything printed: URLs of Redis, the store and Kafka may carry a user,
//! a password or a token, and error lines and logs end up in places secrets must not.

/// What replaces a credential.
pub const REDACTED: &str = "***";

/// Query parameters whose values are secrets (compared case-insensitively, by substring).
const SECRET_PARAMS: &[&str] = &["pass", "secret", "token", "key", "auth"];

/// `raw` with credentials replaced by [`REDACTED`]: the userinfo of every comma-separated
/// URL or `user:password@host:port` entry, and the values of secret-looking query
/// parameters. Anything else (scheme, host, port, path) stays, so the line still says where.
pub fn redact_url(raw: &str) -> String {
    raw.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

/// `text` (an error line) with every word that holds an `@` passed through
/// [`redact_url`]; words are split at whitespace, quotes and brackets, as error messages
/// quote the values they echo.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '[' | ']' | '(' | ')') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn redact_one(entry: &str) -> String {
    let (scheme, rest) = match entry.find("://") {
        Some(at) => entry.split_at(at + 3),
        None => ("", entry),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}{}", &authority[at..]),
        None => authority.to_string(),
    };
    format!("{scheme}{authority}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(fragment) => format!("{path}?{query}#{fragment}"),
        None => format!("{path}?{query}"),
    }
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_userinfo_and_secret_params() {
        for (raw, shown) in [
            ("redis://:hunter2@cache:6379/0", "redis://***@cache:6379/0"),
            ("redis://app:hunter2@cache:6379", "redis://***@cache:6379"),
            ("redis://hunter2@cache:6379", "redis://***@cache:6379"),
            (
                "redis://cache:6379/0?password=hunter2&db=1",
                "redis://cache:6379/0?password=***&db=1",
            ),
            (
                "redis-cluster://a:hunter2@n1:7000,n2:7001",
                "redis-cluster://***@n1:7000,n2:7001",
            ),
            (
                "scylla://cass:hunter2@db1:9042,cass:hunter2@db2:9042",
                "scylla://***@db1:9042,***@db2:9042",
            ),
            (
                "k:hunter2@broker1:9092,broker2:9092",
                "***@broker1:9092,broker2:9092",
            ),
            ("redis://p%40ss@word@cache:6379", "redis://***@cache:6379"),
            ("sqlite://./data/holdfast.db", "sqlite://./data/holdfast.db"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            let redacted = redact_url(raw);
            assert_eq!(redacted, shown, "{raw}");
            assert!(!redacted.contains("hunter2"), "{redacted}");
        }
    }

    #[test]
    fn redact_text_hides_credentials_inside_error_lines() {
        let line = "error: invalid value 'redis://app:hunter2@cache:x' for '--redis-url <URL>': bad port";
        assert_eq!(
            redact_text(line),
            "error: invalid value 'redis://***@cache:x' for '--redis-url <URL>': bad port"
        );
        let line = r#"cannot open store: Couldn't resolve any hostname: ["cass:hunter2@db1:9042"]"#;
        assert!(!redact_text(line).contains("hunter2"), "{}", redact_text(line));
        assert_eq!(redact_text("no secrets: a:b c"), "no secrets: a:b c");
    }
}
