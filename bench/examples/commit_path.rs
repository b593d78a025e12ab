//! Where a commit's time goes: Tandem's append (one log row per transaction, as under loads 1–3)
//! beside the floors under it, on the same disk, one after another on a quiet machine.
//!
//! ```text
//! cargo run --release -p tandem-bench --example commit_path -- [--commits N] [--dir DIR]
//!     [--postgres-url postgres://postgres@127.0.0.1:5432/tandem_probe]
//! ```
//!
//! For SQLite (a fresh file in DIR, default a temporary directory on the working disk) and, when
//! a Postgres URL is given, for Postgres (the database is dropped and created), it prints the
//! mean, p50 and p99 of:
//! - `fdatasync`: write 64 bytes to a file and `fdatasync` it (SQLite only: the disk's floor);
//! - `minimal`: `BEGIN; INSERT INTO probe (data) VALUES (?); COMMIT` through sqlx on a pooled
//!   connection: what any store through sqlx pays;
//! - `tandem`: `Store::append` of one 40-byte update to one of 200 documents in turn.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use tandem::domain::DocId;
use tandem::store::{Append, CreatedEvents, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut commits = 2000usize;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut postgres: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--commits" => commits = args.next().unwrap_or_default().parse()?,
            "--dir" => dir = args.next().map(Into::into),
            "--postgres-url" => postgres = args.next(),
            other => anyhow::bail!("unknown argument {other}; see the file's header"),
        }
    }
    let tmp = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir_in(".")?,
    };

    println!("commits per figure: {commits}");
    report("sqlite fdatasync", fdatasync(tmp.path(), commits)?);
    let url = format!("sqlite://{}", tmp.path().join("probe.db").display());
    let store = tandem::store::connect(&url).await?;
    let pool = sqlx::SqlitePool::connect(&url).await?;
    sqlx::query("CREATE TABLE probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .execute(&pool)
        .await?;
    report("sqlite minimal", minimal_sqlite(&pool, commits).await?);
    pool.close().await;
    report("sqlite tandem", tandem(store.as_ref(), commits).await?);

    if let Some(url) = postgres {
        let (admin, db) = url
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("a Postgres URL ends with /database"))?;
        anyhow::ensure!(
            db.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "the probe's database name takes only a-z, 0-9 and _"
        );
        let server = sqlx::PgPool::connect(&format!("{admin}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&server)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&server)
            .await?;
        let store = tandem::store::connect(&url).await?;
        let pool = sqlx::PgPool::connect(&url).await?;
        sqlx::query("CREATE TABLE probe (id BIGSERIAL PRIMARY KEY, data BYTEA NOT NULL)")
            .execute(&pool)
            .await?;
        report("postgres minimal", minimal_postgres(&pool, commits).await?);
        pool.close().await;
        report("postgres tandem", tandem(store.as_ref(), commits).await?);
    }
    Ok(())
}

fn fdatasync(dir: &std::path::Path, commits: usize) -> anyhow::Result<Vec<Duration>> {
    let mut file = std::fs::File::create(dir.join("fdatasync.probe"))?;
    file.write_all(&[0; 4096])?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(commits);
    for i in 0..commits {
        let started = Instant::now();
        file.write_all_at(&[i as u8; 64], (i % 64 * 64) as u64)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    Ok(times)
}

async fn minimal_sqlite(pool: &sqlx::SqlitePool, commits: usize) -> anyhow::Result<Vec<Duration>> {
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(pool)
        .await?;
    let mut times = Vec::with_capacity(commits);
    for _ in 0..commits {
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO probe (data) VALUES ($1)")
            .bind(&[7u8; 40][..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

async fn minimal_postgres(pool: &sqlx::PgPool, commits: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(commits);
    for _ in 0..commits {
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO probe (data) VALUES ($1)")
            .bind(&[7u8; 40][..])
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

async fn tandem(store: &dyn Store, commits: usize) -> anyhow::Result<Vec<Duration>> {
    let docs: Vec<DocId> = (0..200)
        .map(|i| DocId::parse(&format!("probe-{i}")))
        .collect::<Result<_, _>>()?;
    let created = CreatedEvents::default();
    let mut times = Vec::with_capacity(commits);
    for i in 0..commits {
        let append = Append {
            doc: docs[i % docs.len()].clone(),
            data: bytes::Bytes::from_static(&[7u8; 40]),
        };
        let started = Instant::now();
        store.append(&[append], &created).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|&d| ms(d)).sum::<f64>() / times.len().max(1) as f64;
    let at = |q: f64| ms(times[((times.len() as f64 * q) as usize).min(times.len() - 1)]);
    println!(
        "{what:<20} mean {mean:6.3} ms  p50 {:6.3} ms  p99 {:6.3} ms",
        at(0.5),
        at(0.99)
    );
}
