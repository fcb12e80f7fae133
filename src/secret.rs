//! The API key: held in one type whose `Debug` and `Display` never show it.
//!
//! Only [`ApiKey::expose_for_header`] returns the text, and only the HTTP client and the sandbox's key check
//! call it. Anything else that formats a config, an error or a panic message sees `pf_***`.

use std::fmt;
use std::path::Path;

/// Environment variable the key is read from.
pub const API_KEY_ENV: &str = "PURPLEFLEA_API_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no API key: set {API_KEY_ENV} or pass --api-key-file PATH (a key is never accepted as a flag value)")]
    Missing,
    #[error("cannot read the API key file {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("the API key {origin} is empty or has whitespace or control characters inside it")]
    Malformed { origin: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key from text; surrounding whitespace (a trailing newline in a file) is dropped.
    pub fn new(text: &str, origin: &str) -> Result<ApiKey, SecretError> {
        let key = text.trim();
        if key.is_empty() || key.len() > 1024 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::Malformed { origin: origin.to_string() });
        }
        Ok(ApiKey(key.to_string()))
    }

    /// From `--api-key-file` when given, else from `PURPLEFLEA_API_KEY`.
    pub fn resolve(file: Option<&Path>, env_value: Option<String>) -> Result<ApiKey, SecretError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| SecretError::Unreadable { path: path.display().to_string(), source })?;
            return ApiKey::new(&text, "in --api-key-file");
        }
        match env_value {
            Some(v) => ApiKey::new(&v, "in PURPLEFLEA_API_KEY"),
            None => Err(SecretError::Missing),
        }
    }

    /// The key's text, for an `Authorization` header or a constant-time comparison. Nothing else.
    pub fn expose_for_header(&self) -> &str {
        &self.0
    }

    /// How many bytes the key has (its strength, without its text).
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }

    /// Whether two secrets are the same text, compared in constant time.
    pub fn same_as(&self, other: &ApiKey) -> bool {
        self.matches(&other.0)
    }

    /// Compare with a presented bearer token without an early exit on the first differing byte.
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= (*a.get(i).unwrap_or(&0) ^ *b.get(i).unwrap_or(&0)) as usize;
        }
        diff == 0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(pf_***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pf_***")
    }
}

/// Keep the key out of core dumps, for the whole process, before it is read: a crash dump of a run held
/// the `Authorization` header several times over, readable by whoever can read the dump.
///
/// Both knobs, because each alone has a gap: a zero `RLIMIT_CORE` (hard limit too, so nothing in the
/// process can raise it again) stops a core file but not a `core_pattern` pipe to a crash collector, and
/// "not dumpable" stops both unless `fs.suid_dumpable = 2`, which still writes cores (root-only) to a file.
/// Not dumpable also keeps other processes of the same user from attaching a debugger.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit(2) only reads the struct, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: prctl(2) with PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
        if unsafe {
            libc::prctl(
                libc::PR_SET_DUMPABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn after_forbidding_core_dumps_the_process_is_not_dumpable_and_may_not_write_a_core() {
        forbid_core_dumps().unwrap();
        // SAFETY: PR_GET_DUMPABLE takes plain integers and touches no memory of ours.
        let dumpable = unsafe {
            libc::prctl(
                libc::PR_GET_DUMPABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        let mut limit = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
        // SAFETY: getrlimit(2) writes only into `limit`, which outlives the call.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) };
        assert_eq!(dumpable, 0);
        assert_eq!((got, limit.rlim_cur, limit.rlim_max), (0, 0, 0));
    }

    #[test]
    fn debug_and_display_redact() {
        let k = ApiKey::new("pf_live_supersecret", "test").unwrap();
        assert!(!format!("{k:?} {k}").contains("supersecret"));
        assert!(k.matches("pf_live_supersecret"));
        assert!(!k.matches("pf_live_supersecreT"));
        assert!(!k.matches("pf_live_supersecret2"));
    }

    #[test]
    fn resolves_file_before_env_and_refuses_junk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "pf_test_fromfile\n").unwrap();
        let k = ApiKey::resolve(Some(&p), Some("pf_test_env".into())).unwrap();
        assert_eq!(k.expose_for_header(), "pf_test_fromfile");
        assert!(matches!(ApiKey::resolve(None, None), Err(SecretError::Missing)));
        assert!(matches!(ApiKey::resolve(None, Some("a b".into())), Err(SecretError::Malformed { .. })));
        let missing = ApiKey::resolve(Some(&dir.path().join("nope")), None).unwrap_err().to_string();
        assert!(missing.contains("nope"));
    }
}
