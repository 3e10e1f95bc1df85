use super::*;

/// A database made for one test.
pub struct TestDb {
    pub settings: PgSettings,
    admin: PgSettings,
    pub name: String,
}

fn admin_settings() -> Result<PgSettings, String> {
    let url = std::env::var("IVRGATE_TEST_PG").unwrap_or_else(|_| {
        "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable".to_owned()
    });
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| format!("IVRGATE_TEST_PG: {e}"))?;
    Ok(PgSettings {
        config,
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(60),
        tls_ca_file: None,
        group_commit_max: 512,
        heartbeat: HEARTBEAT,
        lapse: LAPSE,
    })
}

impl TestDb {
    /// Creates a fresh database (pool of at most 4), or `None` (after a loud message)
    /// when no server is reachable outside CI. Panics under CI when unreachable.
    pub async fn create(hint: &str) -> Option<TestDb> {
        let admin = match admin_settings() {
            Ok(a) => a,
            Err(why) => panic!("{why}"),
        };
        let name = format!(
            "ivrgate_t_{}_{}",
            hint.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(30)
                .collect::<String>()
                .to_lowercase(),
            crate::ids::instance_id()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        );
        let created = async {
            let pool = admin.pool()?;
            let client = pool.get().await.map_err(|e| describe(&e))?;
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .map_err(|e| describe(&e))
        }
        .await;
        if let Err(why) = created {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "PostgreSQL for tests ({}) is unreachable under CI: {why}",
                    admin.hosts()
                );
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED: PostgreSQL test {hint}: no server at {} ({why}); \
                 set IVRGATE_TEST_PG or start PostgreSQL !!!!!!!!\n",
                admin.hosts()
            );
            return None;
        }
        let mut settings = admin.with_dbname(&name);
        settings.pool_size = 4;
        Some(TestDb {
            settings,
            admin,
            name,
        })
    }

    /// Drops the database (its connections first).
    pub async fn drop_db(self) {
        let dropped = async {
            let pool = self.admin.pool()?;
            let client = pool.get().await.map_err(|e| describe(&e))?;
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .await
                .map_err(|e| describe(&e))
        }
        .await;
        if let Err(why) = dropped {
            eprintln!("could not drop test database {}: {why}", self.name);
        }
    }
}
