//! Applies a component's migrations before it serves, with sqlx's migrator.
//!
//! The folder may hold one set of `<version>_<name>.sql` files for both
//! backends, or `sqlite/` and `postgres/` subfolders where the SQL differs.
//! sqlx records what it applied; re-running is a no-op, and a database whose
//! applied migrations no longer match the files is refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use sqlx::migrate::{MigrateError, Migrator};

use super::database::Database;
use super::provision::HOST_SCHEMA;

/// Applies the migrations in `folder` to `database`.
pub async fn apply(database: &Database, folder: &Path) -> anyhow::Result<()> {
    let folder = backend_folder(folder, database.backend());
    let mut migrator = Migrator::new(folder.clone())
        .await
        .with_context(|| format!("reading migrations from {}", folder.display()))?;
    let result = match database {
        Database::Sqlite(pool) => migrator.run(pool).await,
        Database::Postgres(pool) => {
            // The history is the host's: out of the component role's reach.
            migrator.dangerous_set_table_name(format!("{HOST_SCHEMA}._sqlx_migrations"));
            migrator.run(pool).await
        }
    };
    result.map_err(|error| explain(error, &migrator, &folder))
}

/// `<folder>/<backend>/` when it exists, else `<folder>` itself.
fn backend_folder(folder: &Path, backend: &str) -> PathBuf {
    let specific = folder.join(backend);
    if specific.is_dir() {
        specific
    } else {
        folder.to_path_buf()
    }
}

/// Names the migration file a failure is about.
fn explain(error: MigrateError, migrator: &Migrator, folder: &Path) -> anyhow::Error {
    let file = |version: i64| {
        migrator
            .iter()
            .find(|migration| migration.version == version)
            .map(|migration| {
                let name = format!("{version}_{}.sql", migration.description.replace(' ', "_"));
                folder.join(name).display().to_string()
            })
            .unwrap_or_else(|| format!("migration {version}"))
    };
    match error {
        MigrateError::ExecuteMigration(source, version) => {
            anyhow!("migration {} failed: {source}", file(version))
        }
        MigrateError::VersionMismatch(version) => anyhow!(
            "the database applied a different {} than the file now holds; \
             migrations must not change once applied (add a new one)",
            file(version)
        ),
        MigrateError::VersionMissing(version) => anyhow!(
            "the database has migration {version} applied, which is not in {}; \
             is this the right database?",
            folder.display()
        ),
        MigrateError::Dirty(version) => anyhow!(
            "migration {} was left half-applied by an earlier run; fix the database by hand",
            file(version)
        ),
        other => anyhow!("applying migrations from {}: {other}", folder.display()),
    }
}
