//! The inbound message as verification needs it, with bounded memory:
//! kept in memory up to `limits.memory_bytes`, then spooled to a private,
//! already-unlinked temporary file. At end of message a spooled message is
//! mapped read-only, so its pages are page cache the kernel can reclaim,
//! not heap that grows with the message.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub(super) struct Spool {
    memory: Vec<u8>,
    file: Option<io::BufWriter<File>>,
    len: usize,
    memory_limit: usize,
}

/// The complete message, in memory or mapped from the spool file.
pub(super) enum Contents<'a> {
    Memory(&'a [u8]),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Contents<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Contents::Memory(bytes) => bytes,
            Contents::Mapped(map) => map,
        }
    }
}

impl Spool {
    pub(super) fn new(memory_limit: usize) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            memory_limit,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the message went to the spool file (beyond the memory limit).
    pub(super) fn is_spooled(&self) -> bool {
        self.file.is_some()
    }

    /// Append bytes; the first write beyond the memory limit moves what is
    /// held so far into a temporary file in `dir` (the system's temporary
    /// directory when `None`).
    pub(super) fn write(&mut self, data: &[u8], dir: Option<&Path>) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + data.len() > self.memory_limit {
            // tempfile: O_TMPFILE or create-and-unlink, mode 0600, never a
            // predictable name (RELIABILITY O6).
            let file = match dir {
                Some(dir) => tempfile::tempfile_in(dir)?,
                None => tempfile::tempfile()?,
            };
            let mut writer = io::BufWriter::with_capacity(64 * 1024, file);
            writer.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(writer);
        }
        match self.file.as_mut() {
            Some(writer) => writer.write_all(data)?,
            None => self.memory.extend_from_slice(data),
        }
        self.len += data.len();
        Ok(())
    }

    /// The whole message.
    pub(super) fn contents(&mut self) -> io::Result<Contents<'_>> {
        match self.file.as_mut() {
            None => Ok(Contents::Memory(&self.memory)),
            Some(writer) => {
                writer.flush()?;
                // SAFETY: the file is private to this process (created
                // unlinked, mode 0600) and only appended to through
                // `writer`, which is not used while the map lives (the map
                // borrows `self` mutably), so the mapped bytes cannot change
                // under the reader.
                let map = unsafe { memmap2::Mmap::map(writer.get_ref())? };
                Ok(Contents::Mapped(map))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_stay_in_memory() {
        let mut spool = Spool::new(1024);
        spool.write(b"header\r\n\r\n", None).unwrap();
        spool.write(b"body\r\n", None).unwrap();
        assert!(!spool.is_spooled());
        assert_eq!(&*spool.contents().unwrap(), b"header\r\n\r\nbody\r\n");
    }

    #[test]
    fn large_messages_spool_to_a_private_file_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(100);
        let mut expected = Vec::new();
        for i in 0..1000 {
            let chunk = format!("line {i} of a long body\r\n");
            spool.write(chunk.as_bytes(), Some(dir.path())).unwrap();
            expected.extend_from_slice(chunk.as_bytes());
        }
        assert!(spool.is_spooled());
        assert_eq!(spool.len(), expected.len());
        assert_eq!(&*spool.contents().unwrap(), &expected[..]);
        // The file has no name anyone could open.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_unusable_spool_directory_is_an_error() {
        let mut spool = Spool::new(4);
        let err = spool
            .write(b"more than four", Some(Path::new("/nonexistent/spool")))
            .err();
        assert!(err.is_some());
    }
}
