//! `vectors.f16`: a 64-byte header (magic, format version, dim) then fixed-size rows of
//! f16, one per slot, append-only. The file may hold rows past the committed count (an add
//! that crashed before its commit); they are cut off on open.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

use crate::{IndexError, Result};

#[cfg(target_endian = "big")]
compile_error!("vectors.f16 is little-endian and memory-mapped as native f16");

const MAGIC: &[u8; 8] = b"SETRVEC\0";
pub(crate) const HEADER: usize = 64;

pub(crate) struct VectorFile {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    dim: usize,
    rows: usize,
}

impl VectorFile {
    pub(crate) fn create(path: &Path, dim: usize, version: u32) -> Result<()> {
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&version.to_le_bytes());
        header[12..16].copy_from_slice(&(dim as u32).to_le_bytes());
        let file = File::create(path).map_err(IndexError::io(path))?;
        file.write_all_at(&header, 0)
            .map_err(IndexError::io(path))?;
        file.sync_all().map_err(IndexError::io(path))
    }

    /// Opens with `rows` committed rows, cutting off any uncommitted tail.
    pub(crate) fn open(path: &Path, dim: usize, rows: usize) -> Result<Self> {
        let corrupt = |why: String| IndexError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(IndexError::io(path))?;
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| corrupt(format!("cannot read the vector file header: {e}")))?;
        let file_dim = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if &header[..8] != MAGIC || file_dim as usize != dim {
            return Err(corrupt(format!(
                "vector file header does not match (dim {file_dim}, expected {dim})"
            )));
        }
        let want = rows
            .checked_mul(dim * 2)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or_else(|| corrupt(format!("{rows} rows of dimension {dim} overflow")))?
            as u64;
        let len = file.metadata().map_err(IndexError::io(path))?.len();
        if len < want {
            return Err(corrupt(format!(
                "vector file holds {len} bytes, the committed {rows} rows need {want}"
            )));
        }
        if len > want {
            tracing::warn!(
                extra = len - want,
                "cutting uncommitted rows off the vector file"
            );
            file.set_len(want).map_err(IndexError::io(path))?;
            file.sync_all().map_err(IndexError::io(path))?;
        }
        let mut vf = VectorFile {
            path: path.to_path_buf(),
            file,
            map: None,
            dim,
            rows,
        };
        vf.remap()?;
        Ok(vf)
    }

    fn remap(&mut self) -> Result<()> {
        // SAFETY: the store holds an exclusive lock on its directory, and the file is only
        // ever appended to by this process, so mapped bytes never change or vanish.
        self.map = if self.rows == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&self.file) }.map_err(IndexError::io(&self.path))?)
        };
        Ok(())
    }

    /// Writes `data` (whole rows) at slot `first` and syncs; not yet visible in `rows()`.
    pub(crate) fn write_rows(&self, first: usize, data: &[f16]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let offset = (HEADER + first * self.dim * 2) as u64;
        self.file
            .write_all_at(&bytes, offset)
            .map_err(IndexError::io(&self.path))?;
        self.file.sync_data().map_err(IndexError::io(&self.path))
    }

    /// Makes rows up to `rows` visible after their commit.
    pub(crate) fn set_rows(&mut self, rows: usize) -> Result<()> {
        self.rows = rows;
        self.remap()
    }

    /// Removes rows written past the committed count after a failed commit.
    pub(crate) fn truncate_uncommitted(&self) {
        let want = (HEADER + self.rows * self.dim * 2) as u64;
        if let Err(e) = self.file.set_len(want) {
            tracing::warn!(error = %e, "could not cut uncommitted rows; they are cut on next open");
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// All committed rows, row-major.
    pub(crate) fn data(&self) -> &[f16] {
        match &self.map {
            None => &[],
            Some(map) => {
                let bytes = &map[HEADER..HEADER + self.rows * self.dim * 2];
                // SAFETY: the map is page-aligned and HEADER is even, so the pointer is
                // aligned for f16 (size 2, align 2); f16 has no invalid bit patterns.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) }
            }
        }
    }
}
