//! Which URLs a key may be sent to, and how a URL is shown.

use url::{Host, Url};

use super::HttpError;

/// Refuse anything but https, and plain http to a loopback host (the sandbox); refuse a user name or
/// password in the URL. Credentials in a URL leak: into error messages and logs (a URL is shown wherever
/// it goes wrong), and into the request, where the HTTP stack turns them into a Basic `Authorization`
/// header next to the bearer key. The key has one way in (`PURPLEFLEA_API_KEY` / `--api-key-file`).
pub fn check_url(url: &Url) -> Result<(), HttpError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::CredentialsInUrl { url: shown(url) });
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            if is_loopback(url) {
                Ok(())
            } else {
                Err(HttpError::InsecureUrl { url: shown(url) })
            }
        }
        other => Err(HttpError::BadUrl { url: shown(url), reason: format!("scheme {other:?} is not http(s)") }),
    }
}

/// Is the URL's host this machine (127.0.0.0/8, ::1, `localhost`)?
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL as it may be shown (errors, logs, `Debug`): any user name and password replaced by `***`.
pub fn shown(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut clean = url.clone();
    if clean.set_username("***").is_ok() && clean.set_password(None).is_ok() {
        clean.to_string()
    } else {
        format!("{}://***@{}", url.scheme(), url.host_str().unwrap_or(""))
    }
}

/// Text that was meant to be a URL, as it may be shown when it does not even parse: whatever sits between
/// `scheme://` and the last `@` of the authority is replaced by `***`.
pub fn shown_text(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else { return text.to_string() };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &rest[at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url(&url("https://purpleflea.com/api")).is_ok());
        assert!(check_url(&url("http://127.0.0.1:8080/api")).is_ok());
        assert!(check_url(&url("http://127.9.0.1/api")).is_ok());
        assert!(check_url(&url("http://[::1]:1/api")).is_ok());
        assert!(check_url(&url("http://localhost:1/api")).is_ok());
        assert!(matches!(check_url(&url("http://purpleflea.com/api")), Err(HttpError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("http://10.0.0.1/api")), Err(HttpError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("http://localhost.evil.com/api")), Err(HttpError::InsecureUrl { .. })));
        assert!(matches!(check_url(&url("ftp://x/api")), Err(HttpError::BadUrl { .. })));
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_never_shown() {
        for u in [
            "http://user:s3cret@127.0.0.1:1/api",
            "http://s3cret@127.0.0.1:1/api",
            "https://user:s3cret@purpleflea.com/api",
            "http://user:s3cret@purpleflea.com/api",
            "ftp://user:s3cret@x/api",
        ] {
            let e = check_url(&url(u)).unwrap_err();
            assert!(matches!(e, HttpError::CredentialsInUrl { .. }), "{u}: {e}");
            assert!(!format!("{e} {e:?}").contains("s3cret"), "{u}: {e:?}");
            assert_eq!(e.class(), crate::errors::ErrorClass::Usage);
        }
        assert_eq!(shown(&url("https://u:s3cret@h.example/api?x=1")), "https://***@h.example/api?x=1");
        assert_eq!(shown_text("https://user:s3cret@[::1/api"), "https://***@[::1/api");
        assert_eq!(shown_text("http://a@b:c@host/x@y"), "http://***@host/x@y");
        assert_eq!(shown_text("not a url"), "not a url");
    }
}
