//! `--smtp-url`: where email goes, as `smtp://[user:password@]host[:port][?from=address]`.
//! Display and Debug hide the credentials (`holdfast_platform::redact`), as for every URL
//! the services print.

use holdfast_platform::redact::redact_url;

use crate::SmtpOptions;

/// Port when the URL names none (plain SMTP relay).
pub const DEFAULT_SMTP_PORT: u16 = 25;
/// Sender when the URL has no `from` parameter.
pub const DEFAULT_FROM: &str = "holdfast@localhost";

/// A parsed `--smtp-url`. Display and Debug show it with credentials redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    raw: String,
    options: SmtpOptions,
}

impl SmtpUrl {
    /// Parses `smtp://[user:password@]host[:port][?from=address]`. Errors never echo the
    /// credentials.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let shown = redact_url(raw);
        let rest = raw.strip_prefix("smtp://").ok_or_else(|| {
            format!("expected smtp://[user:password@]host[:port][?from=address], got {shown:?}")
        })?;
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(format!("an SMTP URL has no path, got {shown:?}"));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if user.is_empty() {
                    return Err(format!("empty user name in {shown:?}"));
                }
                Some((percent_decode(user)?, percent_decode(password)?))
            }
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("bad port {port:?} in {shown:?}"))?;
                (host, port)
            }
            None => (host_port, DEFAULT_SMTP_PORT),
        };
        if host.is_empty() {
            return Err(format!("missing host in {shown:?}"));
        }
        let mut from = DEFAULT_FROM.to_string();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("from", value)) if !value.is_empty() => from = percent_decode(value)?,
                _ => {
                    return Err(format!(
                        "unknown or empty parameter {pair:?} in {shown:?} (only from=)"
                    ));
                }
            }
        }
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!("from={from:?} is not an email address in {shown:?}"));
        }
        Ok(Self {
            raw: raw.to_string(),
            options: SmtpOptions {
                host: host.to_string(),
                port,
                from,
                credentials,
            },
        })
    }

    /// What the notifier is built from.
    pub fn options(&self) -> &SmtpOptions {
        &self.options
    }
}

impl std::fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.raw))
    }
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// The clap parser of `--smtp-url`. Unlike a plain function parser, whose errors quote the
/// raw value (password included), its errors show the URL redacted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmtpUrlParser;

impl clap::builder::TypedValueParser for SmtpUrlParser {
    type Value = SmtpUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SmtpUrl, clap::Error> {
        let name = arg
            .and_then(clap::Arg::get_long)
            .map_or_else(|| "--smtp-url".to_string(), |long| format!("--{long}"));
        let raw = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!("{name} is not UTF-8\n"),
            )
        })?;
        SmtpUrl::parse(raw).map_err(|error| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {name}: {error}\n"),
            )
        })
    }
}

/// `%XX` escapes decoded (user names and passwords may hold `@`, `:` or `/` that way).
fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the SMTP URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape in the SMTP URL is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_credentials_and_sender() {
        let url =
            SmtpUrl::parse("smtp://mailer:s%40cret@mx.internal:2525?from=shop%40holdfast.test").unwrap();
        assert_eq!(
            url.options(),
            &SmtpOptions {
                host: "mx.internal".into(),
                port: 2525,
                from: "shop@holdfast.test".into(),
                credentials: Some(("mailer".into(), "s@cret".into())),
            }
        );
        let bare = SmtpUrl::parse("smtp://127.0.0.1").unwrap();
        assert_eq!(bare.options().port, DEFAULT_SMTP_PORT);
        assert_eq!(bare.options().from, DEFAULT_FROM);
        assert_eq!(bare.options().credentials, None);
    }

    #[test]
    fn display_debug_and_errors_hide_credentials() {
        let url = SmtpUrl::parse("smtp://mailer:hunter2@mx:25").unwrap();
        assert_eq!(url.to_string(), "smtp://***@mx:25");
        assert!(!format!("{url:?}").contains("hunter2"));
        for bad in [
            "smtps://mailer:hunter2@mx:25",
            "smtp://mailer:hunter2@mx:0",
            "smtp://mailer:hunter2@:25",
            "smtp://mailer:hunter2@mx:25/path",
            "smtp://mailer:hunter2@mx:25?from=nobody",
            "smtp://mailer:hunter2@mx:25?bcc=x@y.z",
        ] {
            let error = SmtpUrl::parse(bad).unwrap_err();
            assert!(!error.contains("hunter2"), "{bad}: {error}");
        }
    }
}
