//! Space held back for the index, so a deletion can always commit.
//!
//! redb writes a transaction's pages copy-on-write and grows its file when
//! it has no free pages; on a full filesystem that commit fails, and after
//! a failed commit the index refuses work until the relay restarts. The
//! store's disk reserve keeps uploads from filling the disk, but anything
//! else on the filesystem can. So the writer keeps a ballast file of real
//! (allocated) blocks in the data directory: when the filesystem has less
//! free space than the ballast, the ballast goes before the next
//! transaction, which then has room for its pages, and deletions (how a
//! full disk gets space back) go through. It comes back once the space has.

use std::io;
use std::path::{Path, PathBuf};

/// The file's name under the data directory.
const NAME: &str = "ballast";
/// The most the ballast holds: far more than the pages of one batch.
const MAX_SIZE: u64 = 16 << 20;

#[derive(Debug)]
pub(crate) struct Ballast {
    path: PathBuf,
    size: u64,
    present: bool,
}

impl Ballast {
    /// The ballast of the data directory `dir`, a quarter of the disk
    /// `reserve` (at most [`MAX_SIZE`]; none without a reserve), created
    /// now if the filesystem has room for it.
    pub(crate) fn open(dir: &Path, reserve: u64) -> io::Result<Self> {
        let path = dir.join(NAME);
        let size = (reserve / 4).min(MAX_SIZE);
        let present = std::fs::metadata(&path).is_ok_and(|m| m.len() == size && size > 0);
        let mut ballast = Self {
            path,
            size,
            present,
        };
        if size == 0 {
            ballast.release()?;
        } else {
            ballast.restore()?;
        }
        Ok(ballast)
    }

    /// Before a transaction: if the filesystem has less free space than
    /// the ballast holds, releases it so the commit has room.
    pub(crate) fn make_room(&mut self) -> io::Result<()> {
        if self.present && free_bytes(&self.path)? < self.size {
            tracing::warn!(
                path = %self.path.display(),
                "the data directory's filesystem is full; the index's ballast is released \
                 so that deletions can commit"
            );
            self.release()?;
        }
        Ok(())
    }

    /// After a transaction: takes the ballast back if it is gone and the
    /// filesystem has room for it and as much again.
    pub(crate) fn restore(&mut self) -> io::Result<()> {
        if self.present || self.size == 0 || free_bytes(&self.path)? < 2 * self.size {
            return Ok(());
        }
        let file = std::fs::File::create(&self.path)?;
        // Allocated, not sparse: a sparse file would give nothing back.
        let allocated =
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.size);
        if allocated.is_err() {
            write_zeros(&file, self.size)?;
        }
        file.sync_all()?;
        self.present = true;
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.present = false;
        Ok(())
    }
}

/// Free bytes on the filesystem holding `path` (or its directory).
fn free_bytes(path: &Path) -> io::Result<u64> {
    let dir = path.parent().unwrap_or(path);
    let fs = rustix::fs::statvfs(dir)?;
    Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// Fills `file` with `size` zero bytes, for filesystems without fallocate.
fn write_zeros(file: &std::fs::File, size: u64) -> io::Result<()> {
    use std::io::Write as _;
    let zeros = [0u8; 64 << 10];
    let mut left = size;
    let mut out = file;
    while left > 0 {
        let n = usize::try_from(left).map_or(zeros.len(), |left| left.min(zeros.len()));
        out.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ballast_is_allocated_and_none_without_a_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let ballast = Ballast::open(dir.path(), 8 << 20).unwrap();
        assert!(ballast.present);
        let meta = std::fs::metadata(dir.path().join(NAME)).unwrap();
        assert_eq!(meta.len(), 2 << 20);
        use std::os::unix::fs::MetadataExt as _;
        assert!(meta.blocks() * 512 >= 2 << 20, "the ballast is sparse");

        drop(ballast);
        let none = Ballast::open(dir.path(), 0).unwrap();
        assert!(!none.present);
        assert!(!dir.path().join(NAME).exists());
    }
}
