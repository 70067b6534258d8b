//! Which browser origins may call over grpc-web (`--cors-origin`): a page from any other
//! origin gets no CORS allow headers, so the browser refuses to hand it the response.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// Response headers a cross-origin grpc-web client must be able to read: the status, its
/// message and the rich error details (`google.rpc.Status`).
pub const GRPC_EXPOSED_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("grpc-status"),
    http::HeaderName::from_static("grpc-message"),
    http::HeaderName::from_static("grpc-status-details-bin"),
];

/// The `--cors-origin` flag.
#[derive(Debug, Clone, Default, Args)]
pub struct CorsArgs {
    /// Browser origin allowed to call over grpc-web: `https://shop.example`, or
    /// `http://localhost:*` for any port. Repeat it or separate with commas. Unset: no origin
    /// under `holdfast serve`; loopback origins (localhost, 127.0.0.1, [::1]) on any port
    /// under `holdfast dev`.
    #[arg(long = "cors-origin", env = "HOLDFAST_CORS_ORIGIN", value_name = "ORIGIN",
          value_delimiter = ',', value_parser = OriginPattern::parse)]
    pub cors_origin: Vec<OriginPattern>,
}

impl CorsArgs {
    /// `holdfast dev`'s default: when no origin is configured, loopback origins on any port.
    pub fn default_to_loopback(&mut self) {
        if self.cors_origin.is_empty() {
            self.cors_origin = AllowedOrigins::loopback().0.to_vec();
        }
    }

    /// The configured origins.
    pub fn allowed(&self) -> AllowedOrigins {
        AllowedOrigins(self.cors_origin.clone().into())
    }
}

/// An origin a browser page may call from: scheme, host and port (`None`: any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `scheme://host[:port]` or `scheme://host:*` (any port); no path, no wildcard
    /// host. Scheme and host are compared case-insensitively.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let error =
            || format!("expected an origin like https://shop.example or http://localhost:*, got {raw:?}");
        let (scheme, rest) = raw.trim().split_once("://").ok_or_else(error)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(error()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            // [::1] without a port: the colon is inside the brackets.
            Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(error)?),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !host_ok {
            return Err(error());
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches(&self, origin: &OriginPattern) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && self.port.is_none_or(|port| origin.port == Some(port))
    }
}

/// The origins a server answers CORS for; empty: none.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Arc<[OriginPattern]>);

impl AllowedOrigins {
    /// No origin: browsers refuse every cross-origin call.
    pub fn none() -> Self {
        Self::default()
    }

    /// `http://` and `https://` on localhost, 127.0.0.1 and [::1], any port.
    pub fn loopback() -> Self {
        let patterns = ["http", "https"]
            .into_iter()
            .flat_map(|scheme| {
                ["localhost", "127.0.0.1", "[::1]"].map(|host| OriginPattern {
                    scheme: scheme.into(),
                    host: host.into(),
                    port: None,
                })
            })
            .collect::<Vec<_>>();
        Self(patterns.into())
    }

    /// Exactly these origins (parsed like `--cors-origin`).
    pub fn list<'a>(origins: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let patterns = origins
            .into_iter()
            .map(OriginPattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(patterns.into()))
    }

    /// Whether a request's `Origin` header is one of them.
    pub fn allows(&self, origin: &str) -> bool {
        match OriginPattern::parse(origin) {
            Ok(origin) if origin.port.is_some() => self.0.iter().any(|p| p.matches(&origin)),
            _ => false,
        }
    }

    /// The CORS layer: allow headers only for these origins, the gRPC status headers
    /// exposed (a trailers-only error carries its status in headers), preflights cached
    /// for ten minutes. No credentials: callers authenticate with a bearer header.
    pub fn layer(&self) -> CorsLayer {
        let allowed = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                origin.to_str().is_ok_and(|origin| allowed.allows(origin))
            }))
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(GRPC_EXPOSED_HEADERS)
            .max_age(Duration::from_secs(600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_match_only_themselves() {
        let allowed = AllowedOrigins::list(["https://shop.example", "http://127.0.0.1:8080"]).expect("valid");
        assert!(allowed.allows("https://shop.example"));
        assert!(allowed.allows("https://SHOP.example:443"));
        assert!(allowed.allows("http://127.0.0.1:8080"));
        assert!(!allowed.allows("http://shop.example"), "other scheme");
        assert!(!allowed.allows("https://shop.example:8443"), "other port");
        assert!(!allowed.allows("https://evil.example"));
        assert!(!allowed.allows("https://shop.example.evil.example"));
        assert!(!allowed.allows("http://127.0.0.1:8081"));
        assert!(!allowed.allows("null"));
        assert!(!AllowedOrigins::none().allows("https://shop.example"));
    }

    #[test]
    fn loopback_allows_any_port_on_loopback_only() {
        let loopback = AllowedOrigins::loopback();
        assert!(loopback.allows("http://localhost:5173"));
        assert!(loopback.allows("http://127.0.0.1:40123"));
        assert!(loopback.allows("http://[::1]:3000"));
        assert!(loopback.allows("https://localhost"));
        assert!(!loopback.allows("http://192.168.1.5:5173"));
        assert!(!loopback.allows("http://localhost.evil.example:5173"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "https://*.example",
            "https://shop.example/path",
            "https://:443",
            "http://h:0",
            "*",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
