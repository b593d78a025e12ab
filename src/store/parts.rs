//! Large snapshots, stored in parts.
//!
//! A busy document's snapshot grows to many megabytes, and a compaction rewrites it whole.
//! Written in one transaction, its bytes hold up the appends behind it: SQLite takes one writer
//! at a time, and a Postgres commit waits for the WAL flush of everything logged before it. So a
//! snapshot over `PART_BYTES` is first written as parts of a new generation, each in a short
//! transaction of its own, with appends committed between them. Nothing reads those parts until
//! the transaction that drops the covered log rows points the document's snapshot row at their
//! generation; it also drops the parts of every other generation. A compaction cut short leaves
//! the previous snapshot in place, and parts that the next one drops.

use super::StoreError;
use crate::domain::DocId;

/// Snapshots larger than this are written in parts of this size. A part holds appends up for
/// about one fsync: at 100,000 updates/s on one document with a 10 MB snapshot, on SQLite, parts
/// of 1 MiB held them up for 2–15 ms each and p99 passed 50 ms at 110,000/s; with parts of
/// 64 KiB it stayed under 50 ms at 115,000/s in most runs.
pub(crate) const PART_BYTES: usize = 64 << 10;

/// A document's (`$1`) snapshot row: inline state, covered log id, and the generation and number
/// of its parts (NULL and 0 when the state is inline).
pub(crate) const HEAD_SQL: &str =
    "SELECT state, log_id, gen, parts FROM snapshots WHERE doc_id = $1";

/// Writes a compaction's snapshot row (`$1` document, `$2` inline state, `$3` covered log id,
/// `$4` generation of its parts or NULL, `$5` number of parts). A document that no longer exists
/// gets none, and a snapshot that covers fewer log rows than the stored one (from a document
/// instance since reloaded) does not replace it: the rows it lacks may already be gone.
pub(crate) const SNAPSHOT_SQL: &str = "INSERT INTO snapshots (doc_id, state, log_id, gen, parts) \
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1) \
     ON CONFLICT (doc_id) DO UPDATE SET state = excluded.state, log_id = excluded.log_id, \
     gen = excluded.gen, parts = excluded.parts WHERE excluded.log_id >= snapshots.log_id";

/// A generation (for document `$1`) that no part has. Compactions of one document are written
/// one after another, so no other compaction takes it meanwhile.
pub(crate) const NEXT_GENERATION_SQL: &str =
    "SELECT COALESCE(MAX(gen), 0) + 1 FROM snapshot_parts WHERE doc_id = $1";

/// Writes one part (`$1` document, `$2` generation, `$3` index, `$4` bytes); a retried compaction
/// may write it again.
pub(crate) const PART_SQL: &str = "INSERT INTO snapshot_parts (doc_id, gen, part, data) \
     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1) \
     ON CONFLICT (doc_id, gen, part) DO UPDATE SET data = excluded.data";

/// Drops a document's (`$1`) parts of every generation but the one its snapshot row names.
pub(crate) const DROP_STALE_SQL: &str = "DELETE FROM snapshot_parts WHERE doc_id = $1 \
     AND gen IS DISTINCT FROM (SELECT gen FROM snapshots WHERE doc_id = $1)";

/// Drops the log rows (`$1` document) up to a covered log id (`$2`). Whether or not the snapshot
/// just written replaced the stored one, that one covers these rows too.
pub(crate) const DROP_COVERED_SQL: &str = "DELETE FROM updates WHERE doc_id = $1 AND id <= $2";

/// The parts of a document (`$1`) of one generation (`$2`), in order.
pub(crate) const READ_SQL: &str =
    "SELECT part, data FROM snapshot_parts WHERE doc_id = $1 AND gen = $2 ORDER BY part";

/// Reads a document's (`$doc`) snapshot, inline or in parts, within the read transaction `$tx`:
/// evaluates to the state (`None` if it has none) and the log id it covers (0 if none).
macro_rules! read_snapshot {
    ($tx:ident, $doc:expr) => {{
        use $crate::store::parts;
        let doc: &$crate::domain::DocId = $doc;
        let head = sqlx::query(parts::HEAD_SQL)
            .bind(doc.as_str())
            .fetch_optional(&mut *$tx)
            .await?;
        match head {
            Some(row) => {
                let mut state = row.try_get::<Vec<u8>, _>(0)?;
                if let Some(generation) = row.try_get::<Option<i64>, _>(2)? {
                    let rows = sqlx::query_as(parts::READ_SQL)
                        .bind(doc.as_str())
                        .bind(generation)
                        .fetch_all(&mut *$tx)
                        .await?;
                    state = parts::join(doc, row.try_get(3)?, rows)?;
                }
                (Some(state), row.try_get::<i64, _>(1)?)
            }
            None => (None, 0),
        }
    }};
}
pub(crate) use read_snapshot;

/// The body of `Store::compact` for a backend with a sqlx pool at `$store.pool`: writes the large
/// snapshots' parts, one transaction each, then switches to every snapshot and drops the log rows
/// they cover in one transaction. `$hold` is evaluated before each transaction and kept until it
/// ends (SQLite's write gate; `()` where none is needed).
macro_rules! compact_in_parts {
    ($store:expr, $compactions:expr, $hold:expr) => {{
        use $crate::store::parts;
        let compactions: &[$crate::store::Compaction] = $compactions;
        let mut written = Vec::with_capacity(compactions.len());
        for compaction in compactions {
            let Some(chunks) = parts::split(&compaction.snapshot) else {
                written.push(None);
                continue;
            };
            let doc = compaction.doc.as_str();
            let generation: i64 = sqlx::query_scalar(parts::NEXT_GENERATION_SQL)
                .bind(doc)
                .fetch_one(&$store.pool)
                .await?;
            let mut count: i64 = 0;
            for data in chunks {
                let _held = $hold;
                sqlx::query(parts::PART_SQL)
                    .bind(doc)
                    .bind(generation)
                    .bind(count)
                    .bind(data)
                    .execute(&$store.pool)
                    .await?;
                count += 1;
            }
            written.push(Some((generation, count)));
        }
        let _held = $hold;
        let mut tx = $store.pool.begin().await?;
        for (compaction, written) in compactions.iter().zip(written) {
            let (state, generation, count) = match written {
                Some((generation, count)) => (&[][..], Some(generation), count),
                None => (compaction.snapshot.as_slice(), None, 0),
            };
            let doc = compaction.doc.as_str();
            sqlx::query(parts::SNAPSHOT_SQL)
                .bind(doc)
                .bind(state)
                .bind(compaction.covers_log_id)
                .bind(generation)
                .bind(count)
                .execute(&mut *tx)
                .await?;
            sqlx::query(parts::DROP_STALE_SQL)
                .bind(doc)
                .execute(&mut *tx)
                .await?;
            sqlx::query(parts::DROP_COVERED_SQL)
                .bind(doc)
                .bind(compaction.covers_log_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }};
}
pub(crate) use compact_in_parts;

/// The parts to write `snapshot` in, or `None` if it is small enough to write inline.
pub(crate) fn split(snapshot: &[u8]) -> Option<std::slice::Chunks<'_, u8>> {
    (snapshot.len() > PART_BYTES).then(|| snapshot.chunks(PART_BYTES))
}

/// The state from the parts read back (index and bytes, in index order); an error unless they
/// are exactly parts `0..parts`, at least one.
pub(crate) fn join(
    doc: &DocId,
    parts: i64,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<Vec<u8>, StoreError> {
    let complete = parts > 0
        && rows.len() as i64 == parts
        && (0..).zip(&rows).all(|(index, (part, _))| *part == index);
    if !complete {
        return Err(StoreError::Other(anyhow::anyhow!(
            "the snapshot of {doc} is stored in {parts} parts, but parts {:?} were found",
            rows.iter().map(|(part, _)| part).collect::<Vec<_>>()
        )));
    }
    Ok(rows.into_iter().flat_map(|(_, data)| data).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocId {
        DocId::parse("parts").expect("valid name")
    }

    #[test]
    fn only_a_snapshot_over_a_part_is_split_and_the_parts_join_back() {
        assert!(split(&vec![1; PART_BYTES]).is_none());
        let snapshot: Vec<u8> = (0..PART_BYTES * 2 + 5).map(|i| (i % 251) as u8).collect();
        let parts: Vec<&[u8]> = split(&snapshot).expect("split").collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [PART_BYTES, PART_BYTES, 5]
        );
        let rows = (0..).zip(parts.iter().map(|p| p.to_vec())).collect();
        assert_eq!(join(&doc(), 3, rows).expect("joins"), snapshot);
    }

    #[test]
    fn a_missing_or_unexpected_part_is_an_error() {
        let rows = |indexes: &[i64]| indexes.iter().map(|&i| (i, vec![i as u8])).collect();
        assert!(join(&doc(), 3, rows(&[0, 2])).is_err(), "a gap");
        assert!(
            join(&doc(), 3, rows(&[0, 1])).is_err(),
            "the last one missing"
        );
        assert!(join(&doc(), 2, rows(&[0, 1, 2])).is_err(), "one too many");
        assert!(
            join(&doc(), 2, rows(&[1, 2])).is_err(),
            "the first one missing"
        );
        assert!(join(&doc(), 0, rows(&[])).is_err(), "none at all");
    }
}
