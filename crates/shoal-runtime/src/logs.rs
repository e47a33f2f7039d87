//! Container logs in the CRI format, one record per line:
//! `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <text>`
//! (`P` marks a partial line, split because it was too long or the stream
//! ended without a newline). Size-based rotation to `NAME.1` … `NAME.N`;
//! reading back with tail, since and follow.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Lines longer than this are written as several partial records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the supervisor read it.
    pub time: DateTime<Utc>,
    /// Where it came from.
    pub stream: Stream,
    /// Whether the text continues in the next record.
    pub partial: bool,
    /// The text, without the newline.
    pub text: String,
}

/// Formats a record (with its trailing newline).
pub fn format_line(time: DateTime<Utc>, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 48);
    out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Parses a record (without its newline).
pub fn parse_line(line: &str) -> Option<LogLine> {
    let mut it = line.splitn(4, ' ');
    let time = DateTime::parse_from_rfc3339(it.next()?)
        .ok()?
        .with_timezone(&Utc);
    let stream = match it.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match it.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(LogLine {
        time,
        stream,
        partial,
        text: it.next().unwrap_or("").to_string(),
    })
}

/// The rotated file number `n` of `path` (`0` is `path` itself).
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

/// Writes records to a log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: File,
    size: u64,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending) `path`; keeps at most `max_files` rotated files of
    /// about `max_bytes` each besides the current one.
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn write_record(&mut self, stream: Stream, partial: bool, text: &[u8]) -> io::Result<()> {
        let rec = format_line(Utc::now(), stream, partial, text);
        if self.size > 0 && self.size + rec.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(rotated(&self.path, self.max_files));
        for n in (1..self.max_files).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Feeds bytes read from a stream; complete lines become records.
    pub fn feed(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + pos];
            for (k, chunk) in line.chunks(MAX_LINE).enumerate() {
                let last = (k + 1) * MAX_LINE >= line.len();
                self.write_record(stream, !last, chunk)?;
            }
            if line.is_empty() {
                self.write_record(stream, false, b"")?;
            }
            start += pos + 1;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_LINE {
            let tail = rest.split_off(MAX_LINE);
            self.write_record(stream, true, &rest)?;
            rest = tail;
        }
        self.pending[i] = rest;
        Ok(())
    }

    /// Writes what is left of a stream that ended without a newline.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.write_record(stream, false, &rest)?;
        }
        Ok(())
    }
}

/// What to read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N records.
    pub tail: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Keep reading new records until the container stops.
    pub follow: bool,
}

/// Reads the records of a log (rotated files oldest first), filtered.
pub fn read_all(path: &Path, max_files: usize, opts: &LogOptions) -> io::Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    for n in (0..=max_files).rev() {
        let p = rotated(path, n);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for l in BufReader::new(f).lines() {
            if let Some(rec) = parse_line(&l?)
                && opts.since.is_none_or(|s| rec.time >= s)
            {
                lines.push(rec);
            }
        }
    }
    if let Some(t) = opts.tail {
        let skip = lines.len().saturating_sub(t);
        lines.drain(..skip);
    }
    Ok(lines)
}

/// Reads a log: first the existing records, then (with `follow`) new ones
/// as they are written, across rotations, until `is_done` says the writer
/// has finished and everything was read.
pub struct LogReader {
    backlog: std::vec::IntoIter<LogLine>,
    follow: Option<Follow>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("follow", &self.follow.is_some())
            .finish()
    }
}

struct Follow {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
    since: Option<DateTime<Utc>>,
    is_done: Box<dyn FnMut() -> bool + Send>,
    buf: String,
}

impl LogReader {
    /// Opens `path` with `opts`; `is_done` is polled in follow mode.
    pub fn open(
        path: &Path,
        max_files: usize,
        opts: LogOptions,
        is_done: Box<dyn FnMut() -> bool + Send>,
    ) -> io::Result<Self> {
        // Open the current file first so that nothing written after the
        // backlog was read is missed or read twice.
        let follow = if opts.follow {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(path)?;
            let ino = f.metadata()?.ino();
            let backlog_end = f.metadata()?.len();
            let backlog = read_all(path, max_files, &opts)?;
            let mut reader = BufReader::new(f);
            reader.seek(SeekFrom::Start(backlog_end))?;
            // Records the backlog read beyond backlog_end would be repeated:
            // trim the backlog to what lies before backlog_end instead.
            let backlog = trim_to(path, backlog, backlog_end)?;
            return Ok(Self {
                backlog: backlog.into_iter(),
                follow: Some(Follow {
                    path: path.to_path_buf(),
                    reader,
                    ino,
                    since: opts.since,
                    is_done,
                    buf: String::new(),
                }),
            });
        } else {
            None
        };
        Ok(Self {
            backlog: read_all(path, max_files, &opts)?.into_iter(),
            follow,
        })
    }
}

/// Drops records of the current file that start at or after `end`.
fn trim_to(path: &Path, lines: Vec<LogLine>, end: u64) -> io::Result<Vec<LogLine>> {
    let mut f = File::open(path)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    if data.len() as u64 <= end {
        return Ok(lines);
    }
    let extra = data[end as usize..].iter().filter(|b| **b == b'\n').count();
    let keep = lines.len().saturating_sub(extra);
    Ok(lines.into_iter().take(keep).collect())
}

impl Iterator for LogReader {
    type Item = io::Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(l) = self.backlog.next() {
            return Some(Ok(l));
        }
        let f = self.follow.as_mut()?;
        loop {
            match f.reader.read_line(&mut f.buf) {
                Err(e) => return Some(Err(e)),
                Ok(_) if f.buf.ends_with('\n') => {
                    let line = std::mem::take(&mut f.buf);
                    match parse_line(line.trim_end_matches('\n')) {
                        Some(rec) if f.since.is_none_or(|s| rec.time >= s) => return Some(Ok(rec)),
                        _ => continue,
                    }
                }
                Ok(_) => {
                    // At the end: rotated away?
                    if let Ok(m) = fs::metadata(&f.path)
                        && m.ino() != f.ino
                    {
                        match File::open(&f.path) {
                            Ok(nf) => {
                                f.ino = m.ino();
                                f.reader = BufReader::new(nf);
                                continue;
                            }
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    if (f.is_done)() {
                        // One last read: the writer may have written just before finishing.
                        match f.reader.read_line(&mut f.buf) {
                            Ok(n) if n > 0 => continue,
                            _ => return None,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn format_roundtrip() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T19:30:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let rec = format_line(t, Stream::Stderr, false, b"hello world");
        assert_eq!(
            rec,
            b"2026-11-28T19:30:00.123456789Z stderr F hello world\n"
        );
        let p = parse_line(std::str::from_utf8(&rec).unwrap().trim_end()).unwrap();
        assert_eq!(
            p,
            LogLine {
                time: t,
                stream: Stream::Stderr,
                partial: false,
                text: "hello world".into()
            }
        );
        assert_eq!(
            parse_line("2026-11-28T19:30:00Z stdout F ").unwrap().text,
            ""
        );
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn splits_lines_and_partials() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.log");
        let mut w = LogWriter::open(&p, 1 << 20, 2).unwrap();
        w.feed(Stream::Stdout, b"one\ntw").unwrap();
        w.feed(Stream::Stderr, b"err\n").unwrap();
        w.feed(Stream::Stdout, b"o\n\nthree").unwrap();
        w.feed(Stream::Stdout, &vec![b'x'; MAX_LINE + 5]).unwrap();
        w.finish(Stream::Stdout).unwrap();
        let lines = read_all(&p, 2, &LogOptions::default()).unwrap();
        let got: Vec<(Stream, bool, usize)> = lines
            .iter()
            .map(|l| (l.stream, l.partial, l.text.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, false, 3),
                (Stream::Stderr, false, 3),
                (Stream::Stdout, false, 3),
                (Stream::Stdout, false, 0),
                (Stream::Stdout, true, MAX_LINE),
                (Stream::Stdout, false, 10),
            ]
        );
        assert_eq!(lines[2].text, "two");
        let tail = read_all(
            &p,
            2,
            &LogOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(tail.len(), 2);
        let future = Utc::now() + chrono::Duration::seconds(60);
        assert!(
            read_all(
                &p,
                2,
                &LogOptions {
                    since: Some(future),
                    ..Default::default()
                }
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn rotates_by_size_and_reads_in_order() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.log");
        let mut w = LogWriter::open(&p, 200, 2).unwrap();
        for i in 0..20 {
            w.feed(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated(&p, 1).exists() && rotated(&p, 2).exists() && !rotated(&p, 3).exists());
        assert!(fs::metadata(&p).unwrap().len() <= 200);
        let lines = read_all(&p, 2, &LogOptions::default()).unwrap();
        let nums: Vec<u32> = lines.iter().map(|l| l.text[5..].parse().unwrap()).collect();
        assert!(
            nums.len() < 20 && nums.windows(2).all(|w| w[1] == w[0] + 1),
            "{nums:?}"
        );
        assert_eq!(*nums.last().unwrap(), 19);
    }

    #[test]
    fn follow_sees_new_lines_across_rotation() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.log");
        let mut w = LogWriter::open(&p, 300, 3).unwrap();
        w.feed(Stream::Stdout, b"first\n").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let mut r = LogReader::open(
            &p,
            3,
            LogOptions {
                follow: true,
                ..Default::default()
            },
            Box::new(move || d2.load(Ordering::SeqCst)),
        )
        .unwrap();
        assert_eq!(r.next().unwrap().unwrap().text, "first");
        let writer = std::thread::spawn(move || {
            for i in 0..10 {
                w.feed(Stream::Stdout, format!("new {i}\n").as_bytes())
                    .unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::SeqCst);
        });
        let rest: Vec<String> = r.map(|l| l.unwrap().text).collect();
        writer.join().unwrap();
        assert_eq!(
            rest,
            (0..10).map(|i| format!("new {i}")).collect::<Vec<_>>()
        );
    }
}
