//! Whose a feed position is, and where a feed's read starts: the pure half of `feed` (see its module
//! documentation for the application ids and why a position names namespace and table).

use url::Url;

use super::FeedSpec;

/// The application ids pfsync stored a feed's position under before namespaces and tables were part of
/// it, and the claim of the feed that took that position over.
pub mod legacy {
    pub fn app_id(name: &str) -> String {
        format!("pfsync.feed.{name}")
    }

    pub fn from_app_id(name: &str) -> String {
        format!("pfsync.feed.{name}.from")
    }

    pub fn claim_app_id(name: &str) -> String {
        format!("pfsync.feed.{name}.migrated")
    }
}

/// Which feed a position belongs to: one feed name, of one namespace, over one table (its Delta table
/// id, which a table keeps for life, and its location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedKey {
    pub namespace: String,
    pub name: String,
    pub table_id: String,
    pub location: Url,
}

impl FeedKey {
    /// The first 8 bytes of the SHA-256 of namespace, name, table id and location (each followed by a
    /// NUL), big-endian, top bit cleared: a Delta transaction version is a signed 64-bit number. A
    /// cryptographic hash, so nobody writes a table whose identity collides with another's on purpose.
    pub fn fingerprint(&self) -> i64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.namespace, &self.name, &self.table_id, self.location.as_str()] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) & i64::MAX as u64) as i64
    }

    /// The application id of the last version this feed consumed.
    pub fn app_id(&self) -> String {
        format!("pfsync.feed.{}.{}.{:016x}", self.namespace, self.name, self.fingerprint())
    }

    /// The application id of the version this feed's next read starts at.
    pub fn from_app_id(&self) -> String {
        format!("{}.from", self.app_id())
    }

    /// The application id whose version is the fingerprint of the table this name of this namespace read.
    pub fn table_app_id(&self) -> String {
        format!("pfsync.feed.{}.{}.table", self.namespace, self.name)
    }
}

/// What the payout log holds for one feed (`log::feed_stored`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// The fingerprint of the table this feed name of this namespace read last.
    pub bound: Option<i64>,
    pub consumed: Option<i64>,
    pub from: Option<i64>,
    /// A position stored before namespaces and tables were part of it; looked up only while this
    /// feed name of this namespace has nothing of its own.
    pub legacy: Option<Legacy>,
}

/// A position stored under the feed's name alone (see the module's last paragraph).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Legacy {
    pub consumed: Option<i64>,
    pub from: Option<i64>,
    /// The fingerprint of the feed that took it over, if one did.
    pub claimed_by: Option<i64>,
    /// Whether the log holds intents of a namespace other than this feed's.
    pub other_namespaces: bool,
}

impl Legacy {
    fn start(&self) -> Option<i64> {
        self.from.or(self.consumed.map(|v| v.saturating_add(1)))
    }
}

/// Where a feed's read starts, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Where this feed of this namespace and table left off.
    Stored(i64),
    /// No position of its own: its `start_version`.
    Fresh(i64),
    /// A position stored without namespace or table, taken over by this feed (and written under its ids
    /// with a claim before it is read from).
    Adopt { consumed: Option<i64>, from: i64 },
}

impl Start {
    pub fn version(self) -> i64 {
        match self {
            Start::Stored(v) | Start::Fresh(v) | Start::Adopt { from: v, .. } => v,
        }
    }
}

/// Where the feed `key` reads from, given what the log holds and its table's last version; the message of
/// a usage error when the position is another table's, or may be another namespace's.
pub fn decide_start(key: &FeedKey, spec: &FeedSpec, stored: &Stored, latest: i64) -> Result<Start, String> {
    let fingerprint = key.fingerprint();
    if let Some(bound) = stored.bound
        && bound != fingerprint
        && spec.table_id.as_deref() != Some(key.table_id.as_str())
    {
        return Err(format!(
            "feed {} of namespace {} was read from another table before (another Delta table id or location): \
             its position belongs to that table, and the table at {} now has Delta table id {}. A position never \
             carries over to another table: reading this one from it would skip its early versions. To start \
             anew, give the feed a new name (it reads from start_version, default 0), or pin this table with \
             table_id = \"{}\" in its [[feeds]] entry (it then reads this table from start_version); see README, \
             Change feeds",
            key.name, key.namespace, key.location, key.table_id, key.table_id
        ));
    }
    if let Some(from) = stored.from.or(stored.consumed.map(|v| v.saturating_add(1))) {
        return Ok(Start::Stored(from));
    }
    let Some(legacy) = stored.legacy.as_ref().filter(|_| stored.bound.is_none()) else {
        return Ok(Start::Fresh(spec.first_version()));
    };
    let Some(from) = legacy.start() else { return Ok(Start::Fresh(spec.first_version())) };
    match legacy.claimed_by {
        Some(c) if c == fingerprint => return Ok(Start::Adopt { consumed: legacy.consumed, from }),
        // Another namespace or table took it over: it was never this feed's.
        Some(_) => return Ok(Start::Fresh(spec.first_version())),
        None => {}
    }
    let doubt = if legacy.other_namespaces {
        Some("the log holds intents of other namespaces too".to_string())
    } else if from > latest.saturating_add(1) {
        Some(format!("the table at {} has versions up to {latest} only", key.location))
    } else {
        None
    };
    match (doubt, spec.start_version) {
        (None, _) => Ok(Start::Adopt { consumed: legacy.consumed, from }),
        (Some(_), Some(v)) => Ok(Start::Fresh(v)),
        (Some(doubt), None) => Err(format!(
            "feed {} has a position stored by an earlier pfsync that recorded neither namespace nor table (next \
             read at version {from}), and {doubt}: it may be another namespace's or another table's. Say where \
             this feed of namespace {} reads from with start_version in its [[feeds]] entry: {from} if the \
             position is this feed's, 0 to read the table again from its start (ids already final are not paid \
             again); see README, Change feeds",
            key.name, key.namespace
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::source::RowShape;

    fn spec(start_version: Option<i64>, table_id: Option<&str>) -> FeedSpec {
        FeedSpec {
            name: "trades".into(),
            location: Url::parse("s3://bucket/events/").unwrap(),
            query: "SELECT 1".into(),
            shape: RowShape::Payouts,
            start_version,
            table_id: table_id.map(str::to_string),
        }
    }

    fn key(namespace: &str, table_id: &str) -> FeedKey {
        FeedKey {
            namespace: namespace.into(),
            name: "trades".into(),
            table_id: table_id.into(),
            location: Url::parse("s3://bucket/events/").unwrap(),
        }
    }

    #[test]
    fn a_position_names_namespace_name_and_table() {
        let a = key("prod", "t-1");
        let fingerprints: Vec<i64> = [
            a.clone(),
            key("test", "t-1"),
            key("prod", "t-2"),
            FeedKey { name: "other".into(), ..a.clone() },
            FeedKey { location: Url::parse("s3://bucket/elsewhere/").unwrap(), ..a.clone() },
        ]
        .iter()
        .map(FeedKey::fingerprint)
        .collect();
        for (i, f) in fingerprints.iter().enumerate() {
            assert!(*f >= 0);
            assert_eq!(fingerprints.iter().filter(|g| *g == f).count(), 1, "{i}: {fingerprints:?}");
        }
        assert_eq!(a.fingerprint(), key("prod", "t-1").fingerprint(), "stable");
        assert_eq!(a.app_id(), format!("pfsync.feed.prod.trades.{:016x}", a.fingerprint()));
        assert_eq!(a.from_app_id(), format!("{}.from", a.app_id()));
        assert_eq!(a.table_app_id(), "pfsync.feed.prod.trades.table");
        // No id of today's form is one of the earlier form, or the claim.
        for old in [legacy::app_id("trades"), legacy::from_app_id("trades"), legacy::claim_app_id("trades")] {
            assert!(![a.app_id(), a.from_app_id(), a.table_app_id()].contains(&old), "{old}");
        }
    }

    #[test]
    fn a_feed_continues_its_own_position_and_stops_when_its_table_changed() {
        let k = key("prod", "t-1");
        let own = Stored { bound: Some(k.fingerprint()), consumed: Some(4), from: Some(3), legacy: None };
        assert_eq!(decide_start(&k, &spec(None, None), &own, 9), Ok(Start::Stored(3)));
        let older = Stored { bound: None, consumed: Some(4), from: None, legacy: None };
        assert_eq!(decide_start(&k, &spec(None, None), &older, 9), Ok(Start::Stored(5)));
        assert_eq!(decide_start(&k, &spec(Some(2), None), &Stored::default(), 9), Ok(Start::Fresh(2)));
        assert_eq!(decide_start(&k, &spec(None, None), &Stored::default(), 9), Ok(Start::Fresh(0)));

        // The name now reads another table (a new id at the same place): stop, saying how to start anew.
        let moved = key("prod", "t-2");
        let before = Stored { bound: Some(k.fingerprint()), ..Stored::default() };
        let e = decide_start(&moved, &spec(Some(5), None), &before, 9).unwrap_err();
        assert!(e.contains("another table") && e.contains("new name") && e.contains("table_id = \"t-2\""), "{e}");
        // Pinned to the new table: it reads that one from its start_version.
        assert_eq!(decide_start(&moved, &spec(Some(5), Some("t-2")), &before, 9), Ok(Start::Fresh(5)));
    }

    #[test]
    fn a_position_of_the_earlier_form_is_taken_over_only_where_it_is_unambiguous() {
        let k = key("prod", "t-1");
        let old = Legacy { consumed: Some(4), from: Some(3), claimed_by: None, other_namespaces: false };
        let with = |l: Legacy| Stored { legacy: Some(l), ..Stored::default() };
        let adopt = Start::Adopt { consumed: Some(4), from: 3 };
        assert_eq!(decide_start(&k, &spec(None, None), &with(old.clone()), 9), Ok(adopt));
        assert_eq!(decide_start(&k, &spec(Some(0), None), &with(old.clone()), 9), Ok(adopt), "the position wins");
        let only_consumed = Legacy { from: None, ..old.clone() };
        assert_eq!(
            decide_start(&k, &spec(None, None), &with(only_consumed), 9),
            Ok(Start::Adopt { consumed: Some(4), from: 5 })
        );
        // Taken over already: by this feed it is its own; by another, it never was this one's.
        let mine = Legacy { claimed_by: Some(k.fingerprint()), ..old.clone() };
        assert_eq!(decide_start(&k, &spec(None, None), &with(mine), 9), Ok(adopt));
        let theirs = Legacy { claimed_by: Some(key("test", "t-1").fingerprint()), ..old.clone() };
        assert_eq!(decide_start(&k, &spec(None, None), &with(theirs), 9), Ok(Start::Fresh(0)));
        // Maybe another namespace's, or past this table's versions: the operator says where to start.
        for (doubt, latest, says) in [
            (Legacy { other_namespaces: true, ..old.clone() }, 9, "other namespaces"),
            (old.clone(), 1, "versions up to 1 only"),
        ] {
            let e = decide_start(&k, &spec(None, None), &with(doubt.clone()), latest).unwrap_err();
            assert!(e.contains(says) && e.contains("start_version") && e.contains("version 3"), "{e}");
            assert_eq!(decide_start(&k, &spec(Some(0), None), &with(doubt), latest), Ok(Start::Fresh(0)));
        }
    }
}
