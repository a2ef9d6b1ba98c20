//! Exactly-once handling across worker crashes.
//!
//! The gateway delivers a task again (same `key`, higher `attempt`) when the
//! worker holding it dies before replying. If the dead worker had already
//! done the work, running the handler again would do it twice. The remedy is
//! to record "task `key` was handled, with this reply" **together with the
//! work's effect**, and to answer a redelivery from that record.
//!
//! A [`DedupStore`] is that record. Give one to
//! [`Worker::dedup`](crate::Worker::dedup) and the library checks it before
//! every handler and fills it after (serializing tasks with the same key).
//! [`MemoryDedup`] covers a session that dropped while the process lived;
//! [`FileDedup`] (an append-only file) also survives a crash of the process.
//! For effects in a database, implement [`DedupStore`] on the database so the
//! key is written in the same transaction as the effect: only then is a crash
//! between "effect done" and "key recorded" impossible.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::task::Reply;

/// Remembers handled task keys and their replies.
pub trait DedupStore: Send + Sync + 'static {
    /// The reply recorded for `key`, if the task was handled already.
    fn get(&self, key: &str) -> Option<Reply>;
    /// Records that `key` was handled with `reply`.
    fn put(&self, key: &str, reply: &Reply) -> std::io::Result<()>;
}

/// An in-memory store of the last `capacity` keys.
#[derive(Debug)]
pub struct MemoryDedup {
    capacity: usize,
    inner: Mutex<(HashMap<String, Reply>, VecDeque<String>)>,
}

impl MemoryDedup {
    /// A store remembering the last `capacity` keys.
    pub fn new(capacity: usize) -> MemoryDedup {
        MemoryDedup { capacity: capacity.max(1), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }
}

impl DedupStore for MemoryDedup {
    fn get(&self, key: &str) -> Option<Reply> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.get(key).cloned()
    }

    fn put(&self, key: &str, reply: &Reply) -> std::io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *inner;
        if map.insert(key.to_owned(), reply.clone()).is_none() {
            order.push_back(key.to_owned());
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        Ok(())
    }
}

/// One line of a [`FileDedup`] file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The task key.
    pub key: String,
    /// The reply it was answered with.
    pub reply: Reply,
}

/// An append-only file of handled keys (one JSON object per line), loaded
/// when opened. A line is written with one `write` call, so a crash leaves
/// either the whole record or a partial last line, which is ignored on load.
/// The file grows without bound: rotate it, or use your database in
/// production.
#[derive(Debug)]
pub struct FileDedup {
    file: Mutex<File>,
    seen: Mutex<HashMap<String, Reply>>,
}

fn encode(key: &str, reply: &Reply) -> String {
    let mut line = json!({
        "key": key,
        "payload": STANDARD.encode(&reply.payload),
        "sub": reply.sub,
        "unsub": reply.unsub,
    });
    if let Some(c) = &reply.context {
        line["context"] = c.clone().into();
    }
    if let Some(a) = reply.accept {
        line["accept"] = a.into();
    }
    let mut text = line.to_string();
    text.push('\n');
    text
}

fn decode(line: &str) -> Option<Record> {
    let v: Value = serde_json::from_str(line).ok()?;
    let list = |f: &str| {
        v.get(f)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let reply = Reply {
        payload: Bytes::from(STANDARD.decode(v.get("payload")?.as_str()?).ok()?),
        accept: v.get("accept").and_then(Value::as_bool),
        context: v.get("context").and_then(Value::as_str).map(str::to_owned),
        sub: list("sub"),
        unsub: list("unsub"),
        error: None,
    };
    Some(Record { key: v.get("key")?.as_str()?.to_owned(), reply })
}

impl FileDedup {
    /// Opens (or creates) the file at `path` and loads its records.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<FileDedup> {
        let seen = FileDedup::records(&path)?.into_iter().map(|r| (r.key, r.reply)).collect();
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(path)?;
        // A torn last line (a crash mid-write) is ended, so the next record
        // starts on a line of its own.
        if std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))? > 0 {
            let mut last = [0u8; 1];
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(-1))?;
            std::io::Read::read_exact(&mut file, &mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(FileDedup { file: Mutex::new(file), seen: Mutex::new(seen) })
    }

    /// Every complete record of the file at `path` (none if it is absent).
    pub fn records(path: impl AsRef<Path>) -> std::io::Result<Vec<Record>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Some(record) = decode(&line?) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Keys recorded.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DedupStore for FileDedup {
    fn get(&self, key: &str) -> Option<Reply> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn put(&self, key: &str, reply: &Reply) -> std::io::Result<()> {
        let line = encode(key, reply);
        self.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes())?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned(), reply.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_is_bounded() {
        let m = MemoryDedup::new(2);
        for k in ["a", "b", "c"] {
            m.put(k, &Reply::new(k.to_owned())).unwrap();
        }
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("c"), Some(Reply::new("c")));
    }

    #[test]
    fn file_store_survives_a_reopen_and_ignores_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let f = FileDedup::open(&path).unwrap();
        let reply = Reply::new(vec![0u8, 159, 146]).context("c").subscribe("room");
        f.put("k1", &reply).unwrap();
        drop(f);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"key\":\"k2\",\"pay").unwrap();
        let f = FileDedup::open(&path).unwrap();
        assert_eq!(f.get("k1"), Some(reply));
        assert_eq!((f.get("k2"), f.len()), (None, 1));
        f.put("k3", &Reply::new("three")).unwrap();
        let keys: Vec<String> = FileDedup::records(&path).unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["k1", "k3"], "a record after a torn line starts on its own line");
    }
}
