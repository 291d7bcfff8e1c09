//! Container logs in the CRI format the kubelet reads
//! (`k8s:pkg/kubelet/kuberuntime/logs/logs.go parseCRILog`):
//! `<RFC3339Nano> <stdout|stderr> <P|F> <content>\n`, one file per
//! container instance at `<dir>/<restartCount>.log`. Lines longer than
//! 16 KiB are split into `P` fragments ending with an `F` one (containerd's
//! `max_container_log_line_size`); text left without a newline at the end
//! of the stream is written as `F`, as containerd does. Files rotate at a
//! size to `<n>.log.<YYYYMMDD-hhmmss>`, keeping at most `max_files` in all.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

/// Container logs are readable by root and the log group only, as kubelet's.
const LOG_MODE: u32 = 0o640;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts a byte stream into log records: complete lines (without their
/// newline) and fragments of lines longer than [`MAX_LINE`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

/// One record: content and whether the line continues (`P`).
pub type Record = (Vec<u8>, bool);

impl LineSplitter {
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Record>) {
        for &b in data {
            if b == b'\n' {
                out.push((std::mem::take(&mut self.buf), false));
            } else {
                self.buf.push(b);
                if self.buf.len() == MAX_LINE {
                    out.push((std::mem::take(&mut self.buf), true));
                }
            }
        }
    }

    /// End of stream: what is left is a full line without its newline.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        if !self.buf.is_empty() {
            out.push((std::mem::take(&mut self.buf), false));
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("container log {}: {action}", path.display())]
pub struct LogError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes one container instance's log file, rotating it.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl LogWriter {
    /// Opens (appending) `<dir>/<restart_count>.log`.
    pub fn open(
        dir: &Path,
        restart_count: u32,
        max_size: u64,
        max_files: usize,
    ) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(|source| LogError {
            action: "create log directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("{restart_count}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(&path)
            .map_err(|source| LogError {
                action: "open",
                path: path.clone(),
                source,
            })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path,
            file,
            size,
            max_size,
            max_files: max_files.max(2),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record with the current time.
    pub fn write(&mut self, stream: Stream, content: &[u8], partial: bool) -> Result<(), LogError> {
        self.write_at(SystemTime::now(), stream, content, partial)
    }

    pub fn write_at(
        &mut self,
        t: SystemTime,
        stream: Stream,
        content: &[u8],
        partial: bool,
    ) -> Result<(), LogError> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(crate::time::rfc3339_nano(t).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| LogError {
            action: "write",
            path: self.path.clone(),
            source,
        })?;
        self.size += line.len() as u64;
        if self.size >= self.max_size {
            self.rotate(t)?;
        }
        Ok(())
    }

    /// Renames the live file aside and starts a new one; drops the oldest
    /// rotated files beyond `max_files` (live file included).
    fn rotate(&mut self, t: SystemTime) -> Result<(), LogError> {
        let stamp = rotation_stamp(t);
        let mut rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        let mut n = 1;
        while rotated.exists() {
            rotated = PathBuf::from(format!("{}.{stamp}.{n}", self.path.display()));
            n += 1;
        }
        let path = self.path.clone();
        let err = move |action| {
            let path = path.clone();
            move |source| LogError {
                action,
                path,
                source,
            }
        };
        fs::rename(&self.path, &rotated).map_err(err("rotate"))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(&self.path)
            .map_err(err("reopen after rotation"))?;
        self.size = 0;
        let prefix = format!(
            "{}.",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut old: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    })
                    .collect()
            })
            .unwrap_or_default();
        old.sort();
        while old.len() + 1 > self.max_files {
            let victim = old.remove(0);
            let _ = fs::remove_file(victim);
        }
        Ok(())
    }
}

/// `YYYYMMDD-hhmmss`, the kubelet's rotation suffix.
fn rotation_stamp(t: SystemTime) -> String {
    let s = crate::time::rfc3339(t);
    // 2024-05-01T12:00:00Z → 20240501-120000
    s.chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        .replace('T', "-")
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub timestamp: String,
    pub stream: String,
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses a CRI log line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry {
        timestamp: String::from_utf8_lossy(ts).into_owned(),
        stream: String::from_utf8_lossy(stream).into_owned(),
        partial,
        content: content.to_vec(),
    })
}

/// What a reader of the log sees: `P` fragments joined, a newline after
/// each full line (as `kubectl logs` prints).
pub fn reassemble(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(e) = parse_line(line) {
            out.extend_from_slice(&e.content);
            if !e.partial {
                out.push(b'\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn records(chunks: &[&[u8]]) -> Vec<Record> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        assert_eq!(
            records(&[b"hel", b"lo\nwor", b"ld\n"]),
            vec![(b"hello".to_vec(), false), (b"world".to_vec(), false)]
        );
    }

    #[test]
    fn a_trailing_line_without_newline_is_full() {
        assert_eq!(
            records(&[b"a\nb"]),
            vec![(b"a".to_vec(), false), (b"b".to_vec(), false)]
        );
    }

    #[test]
    fn long_lines_split_into_16k_partial_fragments() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut data = long.clone();
        data.push(b'\n');
        let r = records(&[&data]);
        assert_eq!(
            r.iter().map(|(c, p)| (c.len(), *p)).collect::<Vec<_>>(),
            [(MAX_LINE, true), (MAX_LINE, true), (5, false)]
        );
    }

    #[test]
    fn lines_are_written_in_cri_format_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 0, 1 << 20, 5).unwrap();
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        w.write_at(t, Stream::Stdout, b"Hello World", false)
            .unwrap();
        w.write_at(t, Stream::Stderr, b"par", true).unwrap();
        w.write_at(t, Stream::Stderr, b"tial", false).unwrap();
        let text = fs::read(dir.path().join("0.log")).unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            "2024-05-01T12:00:00.123456789Z stdout F Hello World\n2024-05-01T12:00:00.123456789Z stderr P par\n2024-05-01T12:00:00.123456789Z stderr F tial\n"
        );
        assert_eq!(reassemble(&text), b"Hello World\npartial\n");
    }

    #[test]
    fn files_rotate_at_the_size_limit_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 2, 200, 3).unwrap();
        for i in 0..40u64 {
            let t = UNIX_EPOCH + Duration::from_secs(1_714_564_800 + i);
            w.write_at(t, Stream::Stdout, format!("line {i}").as_bytes(), false)
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"2.log".to_string()));
        assert!(
            names.iter().filter(|n| n.starts_with("2.log.2024")).count() == 2,
            "{names:?}"
        );
        // The newest lines are in the live file.
        let live = String::from_utf8(fs::read(dir.path().join("2.log")).unwrap()).unwrap();
        assert!(live.is_empty() || live.contains("line 39"), "{live}");
    }

    #[test]
    fn malformed_lines_are_skipped_by_readers() {
        assert_eq!(parse_line(b"garbage"), None);
        assert_eq!(
            reassemble(b"x y Z z\n2024-05-01T12:00:00Z stdout F ok\n"),
            b"ok\n"
        );
    }
}
