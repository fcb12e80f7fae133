//! How every HTTP client pfsync builds itself starts: the providers' ([`super::Client`]), MLflow's and the
//! sandbox's fault proxy. A proxy sees every request it carries, bearer keys and tokens included, so the
//! environment's proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, lower case too) are never read:
//! whoever can set a process's environment would otherwise collect its keys. The one proxy pfsync uses is
//! the one the config names (`[http] proxy`), and only for https to a host other than this machine: through
//! it, TLS runs end to end (`CONNECT`), so the proxy sees a host name and never a header. Plain http goes
//! only to loopback (see [`super::check_url`]) and never through a proxy.
//!
//! Clients built by libraries (delta-rs's Unity Catalog client, the object stores) read the environment
//! themselves; the binary removes the proxy variables before it starts them (`main.rs`, [`PROXY_VARS`]).

use std::time::Duration;

use url::Url;

use super::HttpError;
use super::url::{is_loopback, shown, shown_text};

/// The variables HTTP stacks take a proxy from.
pub const PROXY_VARS: [&str; 6] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"];

/// A reqwest client builder for requests to `target`: no proxy but `proxy` (and that one only where
/// [`proxied`] says), no redirects (a redirect could carry the `Authorization` header to another host),
/// the given timeouts and pfsync's user agent.
pub fn client_builder(
    target: &Url,
    proxy: Option<&Url>,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::ClientBuilder, HttpError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("pfsync/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy.filter(|_| proxied(target)) {
        let proxy = reqwest::Proxy::https(p.as_str())
            .map_err(|e| HttpError::BadSetting(format!("[http] proxy {}: {e}", shown(p))))?;
        builder = builder.proxy(proxy);
    }
    Ok(builder)
}

/// Whether requests to `target` go through the configured proxy: https to another machine only. Loopback
/// is this machine (a proxy there adds nothing but a reader), and plain http would show the proxy every
/// header.
pub fn proxied(target: &Url) -> bool {
    target.scheme() == "https" && !is_loopback(target)
}

/// `[http] proxy`, checked. `Debug` shows no user name or password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shown(&self.0))
    }
}

/// `[http] proxy`, checked when the config is read (a bad one stops the run before anything is touched):
/// an `http://` or `https://` URL of a host, with nothing after it but `/`. A user name and password are
/// allowed (a proxy may ask for them) and never shown.
pub fn parse_proxy(text: &str) -> Result<ProxyUrl, String> {
    let text = text.trim();
    let url = Url::parse(text).map_err(|e| format!("{:?} is not a URL: {e}", shown_text(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{}: the proxy must be an http:// or https:// URL", shown(&url)));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{}: the proxy URL names no host", shown(&url)));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{}: a proxy is a host and port, with no path, query or fragment", shown(&url)));
    }
    reqwest::Proxy::https(url.as_str()).map_err(|e| format!("{}: {e}", shown(&url)))?;
    Ok(ProxyUrl(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_https_to_another_machine_goes_through_the_proxy() {
        assert!(proxied(&url("https://api.purpleflea.com/v1")));
        assert!(!proxied(&url("https://127.0.0.1:8443/api")));
        assert!(!proxied(&url("https://localhost/api")));
        assert!(!proxied(&url("https://[::1]/api")));
        assert!(!proxied(&url("http://127.0.0.1:8080/api")));
        assert!(!proxied(&url("http://purpleflea.com/api")));
    }

    #[test]
    fn a_proxy_is_an_http_or_https_host_and_port() {
        assert_eq!(parse_proxy("http://proxy.corp:3128").unwrap().url().as_str(), "http://proxy.corp:3128/");
        assert!(parse_proxy(" https://proxy.corp:3128/ ").is_ok());
        assert!(parse_proxy("http://user:pw@proxy.corp:3128").is_ok());
        for bad in [
            "proxy.corp:3128",
            "socks5://proxy.corp:1080",
            "ftp://proxy.corp",
            "http://proxy.corp/path",
            "http://proxy.corp/?q=1",
            "",
            "http://",
        ] {
            assert!(parse_proxy(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_refused_proxy_never_shows_its_password() {
        let e = parse_proxy("http://user:s3cret@proxy.corp/path").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = parse_proxy("http://user:s3cret@proxy corp").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let p = parse_proxy("http://user:s3cret@proxy.corp:3128").unwrap();
        assert!(!format!("{p:?}").contains("s3cret"), "{p:?}");
        assert_eq!(p.url().password(), Some("s3cret"), "the proxy itself is sent it");
    }
}
