//! PostgreSQL: a database per component, and roles that reach only it.
//!
//! The runtime config's `[database.<label>] url` names the server, the
//! database and an administrator (a role with CREATEROLE and CREATEDB, or a
//! superuser). That account is used here, at start-up, and nowhere else: it
//! creates two login roles and the database, and hands the database over.
//!
//! - `<db>_app` runs the component's statements. It may connect to its own
//!   database only (CONNECT is revoked from PUBLIC), use and create tables in
//!   `public`, and insert into the outbox; it cannot read the outbox, create
//!   schemas or temporary tables, or outlive its statement timeout (a role
//!   setting, which every released connection is reset to).
//! - `<db>_host` does the host's own work: it owns the database and the
//!   `spindle` schema (outbox, dead letters, migration history), runs the
//!   migrations and the relay, and, as a member of the app role, may cancel
//!   the app's statements.
//!
//! Passwords are derived from the administrator's credentials, so every
//! replica sets and uses the same ones, and nobody without them can. Replicas provision one at a time (an
//! advisory lock), and provisioning an existing database is a no-op, apart
//! from moving what an older Spindle kept in `public` to the roles above.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgConnection};

/// The schema holding the host's tables in a component's database.
pub const HOST_SCHEMA: &str = "spindle";

/// The longest database name whose role names (`<db>_host`) still fit in
/// PostgreSQL's 63-byte identifiers.
const MAX_DATABASE_NAME: usize = 58;

/// The connection settings of a provisioned database's two roles.
pub struct Provisioned {
    /// The host's role: migrations, outbox relay, readiness.
    pub host: PgConnectOptions,
    /// The component's role: its statements and transactions.
    pub app: PgConnectOptions,
    /// The app role's name, for the host's grants.
    pub app_role: String,
}

/// Creates (or brings up to date) the roles and the database `admin_url`
/// names; the app role's statements stop after `statement_limit`.
pub async fn provision(admin_url: &str, statement_limit: Duration) -> anyhow::Result<Provisioned> {
    let admin = PgConnectOptions::from_str(admin_url).context("parsing the database url")?;
    let database = admin
        .get_database()
        .context("the database url names no database (postgres://user@host/DATABASE)")?
        .to_owned();
    check_name(&database)?;
    let host_role = format!("{database}_host");
    let app_role = format!("{database}_app");

    let mut server = admin
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting as the administrator (to the `postgres` database)")?;
    // Replicas starting together would race to create the same roles.
    let lock = lock_key(&database);
    server
        .execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(lock))
        .await?;
    let provisioned = async {
        let host_password = password(admin_url, &host_role);
        let app_password = password(admin_url, &app_role);
        ensure_role(&mut server, &host_role, &host_password, "INHERIT").await?;
        ensure_role(&mut server, &app_role, &app_password, "NOINHERIT").await?;
        ensure_database(
            &mut server,
            &database,
            &host_role,
            &app_role,
            statement_limit,
        )
        .await?;
        prepare_schemas(&admin, &database, &host_role, &app_role).await?;
        anyhow::Ok(Provisioned {
            host: admin.clone().username(&host_role).password(&host_password),
            app: admin.clone().username(&app_role).password(&app_password),
            app_role,
        })
    }
    .await;
    server
        .execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock))
        .await?;
    provisioned
}

/// Database names become parts of role names and quoted identifiers; keep
/// them to what needs no second thought.
fn check_name(database: &str) -> anyhow::Result<()> {
    let plain = database
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !plain || database.is_empty() || database.len() > MAX_DATABASE_NAME {
        bail!(
            "database name `{database}` must be 1 to {MAX_DATABASE_NAME} letters, digits, `_` or `-` \
             (its roles are named `{database}_app` and `{database}_host`)"
        );
    }
    Ok(())
}

/// A role's password: a hash of the administrator's credentials (a secret
/// every replica shares: the URL, and `PGPASSWORD` for a URL without a
/// password) and the role's name.
fn password(admin_url: &str, role: &str) -> String {
    let admin_password = std::env::var("PGPASSWORD").unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(admin_url.as_bytes())
        .chain_update([0])
        .chain_update(admin_password.as_bytes())
        .chain_update([0])
        .chain_update(role.as_bytes())
        .finalize();
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The advisory lock replicas provisioning `database` share.
fn lock_key(database: &str) -> i64 {
    let digest = Sha256::digest(format!("spindle provision {database}").as_bytes());
    let mut key = [0; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the login role, or resets an existing one to exactly these
/// rights: whatever else it was given is taken back.
async fn ensure_role(
    server: &mut PgConnection,
    role: &str,
    password: &str,
    inherit: &str,
) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *server)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    // The password is hex, so it needs no escaping.
    let statement = format!(
        "{verb} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
         {inherit} PASSWORD '{password}'",
        quoted(role)
    );
    server
        .execute(AssertSqlSafe(statement))
        .await
        .with_context(|| format!("{} role `{role}`", verb.to_lowercase()))?;
    Ok(())
}

/// Creates the database owned by the host role (or hands an existing one
/// over), lets only the app role connect, and sets its statement timeout.
async fn ensure_database(
    server: &mut PgConnection,
    database: &str,
    host_role: &str,
    app_role: &str,
    statement_limit: Duration,
) -> anyhow::Result<()> {
    let (database_id, host, app) = (quoted(database), quoted(host_role), quoted(app_role));
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut *server)
            .await?;
    let statements = [
        // The host cancels the app's statements; an administrator that is
        // not a superuser must be a member to make the host an owner.
        format!("GRANT {app} TO {host}"),
        format!("GRANT {host} TO CURRENT_USER"),
        if exists {
            format!("ALTER DATABASE {database_id} OWNER TO {host}")
        } else {
            format!("CREATE DATABASE {database_id} OWNER {host}")
        },
        format!("REVOKE ALL ON DATABASE {database_id} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {database_id} TO {app}"),
        format!(
            "ALTER ROLE {app} IN DATABASE {database_id} SET statement_timeout = {}",
            statement_limit.as_millis().max(1)
        ),
    ];
    for statement in statements {
        server
            .execute(AssertSqlSafe(statement.clone()))
            .await
            .with_context(|| format!("provisioning database `{database}`: {statement}"))?;
    }
    Ok(())
}

/// Inside the database: the host's schema, the app's rights on `public`,
/// and what an older Spindle left in `public` moved to where it belongs.
async fn prepare_schemas(
    admin: &PgConnectOptions,
    database: &str,
    host_role: &str,
    app_role: &str,
) -> anyhow::Result<()> {
    let mut connection = admin
        .clone()
        .database(database)
        .connect()
        .await
        .with_context(|| format!("connecting as the administrator to `{database}`"))?;
    let (host, app) = (quoted(host_role), quoted(app_role));
    let statements = [
        format!("CREATE SCHEMA IF NOT EXISTS {HOST_SCHEMA} AUTHORIZATION {host}"),
        move_host_tables(),
        hand_over_tables(host_role),
        format!("ALTER SCHEMA public OWNER TO {host}"),
        format!("REVOKE ALL ON SCHEMA {HOST_SCHEMA} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {HOST_SCHEMA} TO {app}"),
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE, CREATE ON SCHEMA public TO {app}"),
    ];
    let mut transaction = connection.begin().await?;
    for statement in statements {
        transaction
            .execute(AssertSqlSafe(statement.clone()))
            .await
            .with_context(|| format!("preparing database `{database}`: {statement}"))?;
    }
    transaction.commit().await?;
    connection.close().await?;
    Ok(())
}

/// Moves the outbox, its dead letters and the migration history from
/// `public` (where Spindle kept them before roles) into the host's schema.
fn move_host_tables() -> String {
    format!(
        "DO $$
        DECLARE name text;
        BEGIN
            FOREACH name IN ARRAY ARRAY['spindle_outbox', 'spindle_outbox_dead_letters', '_sqlx_migrations'] LOOP
                IF to_regclass(format('public.%I', name)) IS NOT NULL
                   AND to_regclass(format('{HOST_SCHEMA}.%I', name)) IS NULL THEN
                    EXECUTE format('ALTER TABLE public.%I SET SCHEMA {HOST_SCHEMA}', name);
                END IF;
            END LOOP;
        END $$"
    )
}

/// Makes the host role the owner of every table, view and free-standing
/// sequence in `public` and the host's schema (indexes and the sequences of
/// serial columns follow their tables).
fn hand_over_tables(host_role: &str) -> String {
    let owner = quoted(host_role).replace('\'', "''");
    format!(
        "DO $$
        DECLARE item record;
        BEGIN
            FOR item IN
                SELECT format('%I.%I', n.nspname, c.relname) AS name,
                       CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('public', '{HOST_SCHEMA}')
                  AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                  AND pg_get_userbyid(c.relowner) <> '{host_role}'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                    AND d.deptype IN ('a', 'i'))
            LOOP
                EXECUTE format('ALTER %s %s OWNER TO %s', item.kind, item.name, '{owner}');
            END LOOP;
        END $$"
    )
}

/// What the host grants the app role once the migrations ran: everything
/// on the tables in `public`, and inserting (only) into the outbox.
pub fn app_grants(app_role: &str) -> Vec<String> {
    let app = quoted(app_role);
    vec![
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER \
             ON ALL TABLES IN SCHEMA public TO {app}"
        ),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {app}"),
        format!("GRANT INSERT ON {HOST_SCHEMA}.spindle_outbox TO {app}"),
        format!("GRANT USAGE ON SEQUENCE {HOST_SCHEMA}.spindle_outbox_id_seq TO {app}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_not_make_plain_role_names_are_refused() {
        assert!(check_name("demo_auth").is_ok());
        assert!(check_name("orders-db").is_ok());
        for bad in ["", "a\"b", "a b", "x'y", &"d".repeat(59)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_per_role_and_the_same_on_every_replica() {
        let url = "postgres://admin:secret@db/orders";
        assert_eq!(password(url, "orders_app"), password(url, "orders_app"));
        assert_ne!(password(url, "orders_app"), password(url, "orders_host"));
        assert_ne!(
            password(url, "orders_app"),
            password("postgres://admin:other@db/orders", "orders_app")
        );
    }
}
