//! Opens a store whose files were corrupted, truncated or edited, then uses it.
//!
//! A small valid store (dim 4, five images, one deleted) is built once; each input then
//! rewrites `store.sqlite` and/or `vectors.f16` from it: whole-file replacement, byte
//! patches and truncation of the real files, or row-level edits made with SQLite itself
//! (meta values of any SQL type, image rows with out-of-range or mistyped ids, slots and
//! sizes, duplicated slots and ids once the constraints are dropped, statistics blobs,
//! dropped tables). `Store::open` may refuse the result with any error; whatever it opens
//! must then survive listing, lookups, a search, an add and a delete. A panic, an abort or
//! an allocation over the fuzzer's limit is a bug.
#![no_main]

mod scratch;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value as SqlValue;
use setr_core::{ComposedQuery, ImageId, Strategy};
use setr_index::{NewImage, Store, StoreConfig};

const DIM: usize = 4;
const DB: &str = "store.sqlite";
const VECTORS: &str = "vectors.f16";

/// The valid store's two files, built once.
struct Template {
    db: Vec<u8>,
    vectors: Vec<u8>,
}

fn scratch() -> PathBuf {
    scratch::dir("setr-fuzz-store").to_path_buf()
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = scratch().join("template");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut store = Store::create(&dir, StoreConfig::new(DIM)).expect("create");
            let images = (0..5u32)
                .map(|i| NewImage {
                    embedding: (0..DIM)
                        .map(|d| ((i + 1) * (d as u32 + 2)) as f32)
                        .collect(),
                    source_path: Some(format!("img/{i}.png")),
                    width: Some(10 + i),
                    height: Some(20 + i),
                    content_hash: Some(format!("hash{i}")),
                    metadata: serde_json::json!({ "i": i }),
                })
                .collect();
            let ids: Vec<ImageId> = store
                .add_batch(images)
                .expect("add")
                .iter()
                .map(|o| o.id())
                .collect();
            store.delete(ids[2]).expect("delete");
        }
        let t = Template {
            db: std::fs::read(dir.join(DB)).expect("read db"),
            vectors: std::fs::read(dir.join(VECTORS)).expect("read vectors"),
        };
        let _ = std::fs::remove_dir_all(&dir);
        t
    })
}

/// A value of any SQLite type.
#[derive(Arbitrary, Debug)]
enum Val {
    Null,
    Int(i64),
    /// Small integers are the interesting ones for slots and ids.
    Small(i8),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    fn sql(&self) -> SqlValue {
        match self {
            Val::Null => SqlValue::Null,
            Val::Int(i) => SqlValue::Integer(*i),
            Val::Small(i) => SqlValue::Integer(i64::from(*i)),
            Val::Real(f) => SqlValue::Real(*f),
            Val::Text(s) => SqlValue::Text(s.clone()),
            Val::Blob(b) => SqlValue::Blob(b.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum MetaKey {
    FormatVersion,
    Config,
    NextSlot,
    NextId,
    CreatedAt,
    Other(String),
}

impl MetaKey {
    fn name(&self) -> &str {
        match self {
            MetaKey::FormatVersion => "format_version",
            MetaKey::Config => "config",
            MetaKey::NextSlot => "next_slot",
            MetaKey::NextId => "next_id",
            MetaKey::CreatedAt => "created_at",
            MetaKey::Other(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Column {
    Id,
    Slot,
    SourcePath,
    Width,
    Height,
    ContentHash,
    Metadata,
    AddedAt,
}

impl Column {
    fn name(&self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::Slot => "slot",
            Column::SourcePath => "source_path",
            Column::Width => "width",
            Column::Height => "height",
            Column::ContentHash => "content_hash",
            Column::Metadata => "metadata",
            Column::AddedAt => "added_at",
        }
    }
}

/// A store configuration as JSON, mostly well-formed.
#[derive(Arbitrary, Debug)]
struct Config {
    dim: u32,
    small_dim: bool,
    search_threads: u64,
    backend: u8,
    extra_field: bool,
}

impl Config {
    fn json(&self) -> String {
        let dim = if self.small_dim {
            u64::from(self.dim % 8)
        } else {
            u64::from(self.dim)
        };
        let backend = match self.backend % 5 {
            0 => serde_json::json!({ "kind": "flat" }),
            1 => serde_json::json!({ "kind": "faiss-ivf" }),
            2 => serde_json::json!({ "kind": "faiss-hnsw" }),
            3 => serde_json::json!({ "kind": "cuda", "device": self.backend }),
            _ => serde_json::json!({ "kind": "nonsense" }),
        };
        let mut v = serde_json::json!({
            "dim": dim,
            "backend": backend,
            "search_threads": self.search_threads,
        });
        if self.extra_field {
            v["unknown"] = serde_json::json!(1);
        }
        v.to_string()
    }
}

/// One edit made through SQLite on the valid database.
#[derive(Arbitrary, Debug)]
enum Edit {
    SetMeta(MetaKey, Val),
    /// `next_slot` / `next_id` as decimal text, the way the store writes them.
    SetMetaNumber(MetaKey, u64),
    SetConfig(Config),
    DeleteMeta(MetaKey),
    InsertImage([Val; 8]),
    /// An image row whose id and slot are small integers (more likely to collide).
    InsertSmallImage {
        id: i8,
        slot: i8,
        metadata: String,
    },
    UpdateImage {
        row: u8,
        column: Column,
        value: Val,
    },
    DeleteImage(u8),
    SetStats(Val),
    /// Statistics of another dimension / count, well-formed otherwise.
    SetStatsHeader {
        dim: u64,
        count: u64,
        values: u16,
    },
    /// Recreate `images` without its PRIMARY KEY / UNIQUE / NOT NULL constraints.
    DropConstraints,
    DropTable(u8),
    DropHashIndex,
}

/// How one input damages the store.
#[derive(Arbitrary, Debug)]
enum Damage {
    /// Replace a whole file.
    ReplaceDb(Vec<u8>),
    ReplaceVectors(Vec<u8>),
    /// Overwrite bytes of the real file at offsets, then maybe cut it.
    PatchDb {
        patches: Vec<(u16, Vec<u8>)>,
        truncate: Option<u16>,
    },
    PatchVectors {
        patches: Vec<(u8, Vec<u8>)>,
        truncate: Option<u8>,
        extend: Option<u8>,
    },
    /// Delete one of the files.
    RemoveDb,
    RemoveVectors,
    /// Row-level edits, then maybe a vector-file patch too.
    Edits {
        edits: Vec<Edit>,
        vectors: Option<(u8, Vec<u8>)>,
        truncate_vectors: Option<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    damage: Damage,
    /// Queries and operations once opened.
    query: [i8; DIM],
    k: u8,
    offset: u8,
    lookup: u8,
}

fn patch(bytes: &mut Vec<u8>, offset: usize, with: &[u8]) {
    let offset = offset.min(bytes.len());
    let end = (offset + with.len()).min(bytes.len());
    bytes[offset..end].copy_from_slice(&with[..end - offset]);
}

fn apply_edit(db: &rusqlite::Connection, edit: &Edit) {
    // Every edit may fail (constraints, dropped tables): the damage is whatever succeeded.
    let _ = match edit {
        Edit::SetMeta(k, v) => db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![k.name(), v.sql()],
        ),
        Edit::SetMetaNumber(k, n) => db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![k.name(), n.to_string()],
        ),
        Edit::SetConfig(c) => db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('config', ?1)",
            [c.json()],
        ),
        Edit::DeleteMeta(k) => db.execute("DELETE FROM meta WHERE key = ?1", [k.name()]),
        Edit::InsertImage(vals) => {
            let v: Vec<SqlValue> = vals.iter().map(Val::sql).collect();
            db.execute(
                "INSERT INTO images (id, slot, source_path, width, height, content_hash, metadata, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params_from_iter(v),
            )
        }
        Edit::InsertSmallImage { id, slot, metadata } => db.execute(
            "INSERT INTO images (id, slot, metadata, added_at) VALUES (?1, ?2, ?3, 0)",
            rusqlite::params![i64::from(*id), i64::from(*slot), metadata],
        ),
        Edit::UpdateImage { row, column, value } => db.execute(
            &format!(
                "UPDATE images SET {} = ?1 WHERE rowid = (SELECT rowid FROM images ORDER BY rowid LIMIT 1 OFFSET ?2)",
                column.name()
            ),
            rusqlite::params![value.sql(), i64::from(*row % 8)],
        ),
        Edit::DeleteImage(row) => db.execute(
            "DELETE FROM images WHERE rowid = (SELECT rowid FROM images ORDER BY rowid LIMIT 1 OFFSET ?1)",
            [i64::from(*row % 8)],
        ),
        Edit::SetStats(v) => db.execute("UPDATE stats SET data = ?1", [v.sql()]),
        Edit::SetStatsHeader { dim, count, values } => {
            let mut blob = Vec::new();
            // setr-core's GalleryStats layout: magic, dim, count, then f64 values.
            let template: Vec<u8> = db
                .query_row("SELECT data FROM stats", [], |r| r.get(0))
                .unwrap_or_default();
            blob.extend_from_slice(template.get(..8).unwrap_or(b"\0\0\0\0\0\0\0\0"));
            blob.extend_from_slice(&dim.to_le_bytes());
            blob.extend_from_slice(&count.to_le_bytes());
            for i in 0..*values {
                blob.extend_from_slice(&f64::from(i).to_le_bytes());
            }
            db.execute("UPDATE stats SET data = ?1", [blob])
        }
        Edit::DropConstraints => db
            .execute_batch(
                "CREATE TABLE images2 AS SELECT * FROM images; DROP TABLE images; ALTER TABLE images2 RENAME TO images;",
            )
            .map(|_| 0),
        Edit::DropTable(t) => {
            let table = ["meta", "images", "stats"][usize::from(*t % 3)];
            db.execute_batch(&format!("DROP TABLE {table}")).map(|_| 0)
        }
        Edit::DropHashIndex => db.execute_batch("DROP INDEX images_by_hash").map(|_| 0),
    };
}

fn damage(dir: &Path, damage: &Damage) {
    let t = template();
    let (mut db, mut vectors) = (t.db.clone(), t.vectors.clone());
    let mut edits: Option<&[Edit]> = None;
    let (mut keep_db, mut keep_vectors) = (true, true);
    match damage {
        Damage::ReplaceDb(b) => db = b.clone(),
        Damage::ReplaceVectors(b) => vectors = b.clone(),
        Damage::PatchDb { patches, truncate } => {
            for (at, with) in patches {
                patch(&mut db, usize::from(*at), with);
            }
            if let Some(n) = truncate {
                db.truncate(usize::from(*n));
            }
        }
        Damage::PatchVectors {
            patches,
            truncate,
            extend,
        } => {
            for (at, with) in patches {
                patch(&mut vectors, usize::from(*at), with);
            }
            if let Some(n) = truncate {
                vectors.truncate(usize::from(*n));
            }
            if let Some(n) = extend {
                vectors.extend(std::iter::repeat(0xAB).take(usize::from(*n)));
            }
        }
        Damage::RemoveDb => keep_db = false,
        Damage::RemoveVectors => keep_vectors = false,
        Damage::Edits {
            edits: e,
            vectors: v,
            truncate_vectors,
        } => {
            edits = Some(e);
            if let Some((at, with)) = v {
                patch(&mut vectors, usize::from(*at), with);
            }
            if let Some(n) = truncate_vectors {
                vectors.truncate(usize::from(*n));
            }
        }
    }
    if keep_db {
        std::fs::write(dir.join(DB), &db).expect("write db");
    }
    if keep_vectors {
        std::fs::write(dir.join(VECTORS), &vectors).expect("write vectors");
    }
    if let Some(edits) = edits {
        let conn = rusqlite::Connection::open(dir.join(DB)).expect("open db");
        for edit in edits.iter().take(32) {
            apply_edit(&conn, edit);
        }
    }
}

fn exercise(store: &mut Store, input: &Input) {
    let dim = store.config().dim;
    let len = store.len();
    let _ = store.stats();
    let _ = store.view();
    if let Ok(records) = store.list(usize::from(input.offset), 50) {
        for r in records.iter().take(8) {
            let _ = store.get(r.id);
            let _ = store.embedding(r.id);
            let _ = store.contains(r.id);
        }
    }
    let id = ImageId(u64::from(input.lookup));
    let _ = store.get(id);
    let _ = store.embedding(id);
    let q: Vec<f32> = (0..dim)
        .map(|d| f32::from(input.query[d % DIM]) + 0.5)
        .collect();
    let query = ComposedQuery {
        image: Some(q.clone()),
        text: Some(q.iter().rev().copied().collect()),
    };
    let k = usize::from(input.k).clamp(1, len.max(1));
    for strategy in Strategy::all() {
        if let Ok(hits) = store.search(std::slice::from_ref(&query), strategy, k) {
            for hit in hits.iter().flatten() {
                assert!(
                    hit.id != ImageId::TOMBSTONE,
                    "a search returned a deleted slot"
                );
            }
        }
    }
    // Writes on a damaged store: refused or done, never a crash.
    let added = store.add(NewImage {
        embedding: q,
        metadata: serde_json::json!({ "fuzz": true }),
        ..NewImage::default()
    });
    if let Ok(outcome) = added {
        let _ = store.delete(outcome.id());
    }
    if let Some(r) = store.list(0, 1).ok().and_then(|r| r.into_iter().next()) {
        let _ = store.delete(r.id);
    }
}

fuzz_target!(|input: Input| {
    let dir = scratch().join("store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    damage(&dir, &input.damage);
    if let Ok(mut store) = Store::open(&dir) {
        exercise(&mut store, &input);
        drop(store);
        // What it wrote must open again (or be refused cleanly).
        if let Ok(again) = Store::open(&dir) {
            let _ = again.list(0, 10);
            let _ = again.search(
                &[ComposedQuery {
                    image: Some(vec![1.0; again.config().dim]),
                    text: None,
                }],
                Strategy::Image,
                1.min(again.len()).max(1),
            );
        }
    }
});
