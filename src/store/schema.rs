//! Schema versions, shared by the backends: each store records the migrations applied to it
//! (version, name and a "compatible from" marker) and a binary opens a store only when the
//! store's newest migration says binaries that know its `compatible_from` version still work
//! with it. Migrations expand the schema for one release and contract it a release later, so
//! an expanding migration keeps `compatible_from` at the previous version (a rolling upgrade
//! runs old and new binaries on one store) and only a contracting one raises it.

/// One migration as shipped with this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// The oldest schema version a binary may know and still run on a store with this
    /// migration applied.
    pub compatible_from: i64,
    pub sql: &'static str,
}

/// The newest migration recorded in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub version: i64,
    pub compatible_from: i64,
}

/// What opening a store needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The store has exactly this binary's migrations.
    Current,
    /// Apply these (in order), then the store is current.
    Apply(Vec<Migration>),
    /// The store is newer than this binary but says this binary still works with it.
    NewerCompatible(Stored),
}

/// The newest version this binary knows.
pub fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Decides what to do with a store (`what` names it in messages), or why this binary must
/// not open it.
pub fn plan(what: &str, stored: Option<Stored>, migrations: &[Migration]) -> Result<Plan, String> {
    let known = latest(migrations);
    let Some(stored) = stored else {
        return Ok(Plan::Apply(migrations.to_vec()));
    };
    if stored.version > known {
        if stored.compatible_from > known {
            return Err(format!(
                "{what} schema is at version {}, which is incompatible with this ivrgate \
                 (it knows schema versions up to {known}; the store needs a binary that knows \
                 version {} or later): run a newer ivrgate on it, or restore the backup taken \
                 before it was upgraded",
                stored.version, stored.compatible_from
            ));
        }
        return Ok(Plan::NewerCompatible(stored));
    }
    let pending: Vec<Migration> = migrations
        .iter()
        .filter(|m| m.version > stored.version)
        .copied()
        .collect();
    if pending.is_empty() {
        Ok(Plan::Current)
    } else {
        Ok(Plan::Apply(pending))
    }
}

/// The `compatible_from` a migration file declares in its first line,
/// `-- compatible_from: N`.
pub fn declared_compatible_from(sql: &str) -> Option<i64> {
    sql.lines()
        .next()?
        .trim()
        .strip_prefix("-- compatible_from:")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [Migration; 2] = [
        Migration {
            version: 1,
            name: "init",
            compatible_from: 1,
            sql: "",
        },
        Migration {
            version: 2,
            name: "expand",
            compatible_from: 1,
            sql: "",
        },
    ];

    #[test]
    fn plans_from_the_stored_version() {
        assert_eq!(plan("x", None, &M), Ok(Plan::Apply(M.to_vec())));
        let at = |version, compatible_from| {
            Some(Stored {
                version,
                compatible_from,
            })
        };
        assert_eq!(plan("x", at(1, 1), &M), Ok(Plan::Apply(vec![M[1]])));
        assert_eq!(plan("x", at(2, 1), &M), Ok(Plan::Current));
        // An expanded store (a newer binary's migration 3, still compatible from 1) runs.
        assert_eq!(
            plan("x", at(3, 1), &M),
            Ok(Plan::NewerCompatible(Stored {
                version: 3,
                compatible_from: 1
            }))
        );
        assert!(matches!(
            plan("x", at(3, 2), &M),
            Ok(Plan::NewerCompatible(_))
        ));
        let why = plan("the store's", at(4, 3), &M).expect_err("refused");
        assert!(why.contains("version 4"), "{why}");
        assert!(why.contains("incompatible"), "{why}");
        assert!(why.contains("up to 2"), "{why}");
    }

    #[test]
    fn reads_the_declared_marker() {
        assert_eq!(
            declared_compatible_from("-- compatible_from: 3\nSELECT 1;"),
            Some(3)
        );
        assert_eq!(declared_compatible_from("SELECT 1;"), None);
    }
}
