//! NumPy `.npy` arrays in and out (f32, C order), written atomically.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a float32 .npy array: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// A dense f32 array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Writes `data` with `shape` to `path` as `.npy`; the file appears complete or not at all.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), ArrayError> {
    let io = |source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    };
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    write_atomically(path, |file| {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()
    })
    .map_err(io)
}

/// Reads a float32 `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array, ArrayError> {
    let bytes = std::fs::read(path).map_err(|source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = |e: std::io::Error| ArrayError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(format)?;
    if npy.order() != npyz::Order::C {
        return Err(ArrayError::Format {
            path: path.to_path_buf(),
            reason: "Fortran order is not supported".into(),
        });
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy.into_vec::<f32>().map_err(format)?;
    Ok(Array { shape, data })
}

/// Writes through `fill` into a temporary file beside `path`, then renames it over `path`, so a
/// crash or a full disk never leaves a half-written file under the final name.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("output path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        drop(w);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        write_npy(&path, &[3, 4], &data).unwrap();
        let a = read_npy(&path).unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        assert_eq!(a.data, data);
        // Only the final file remains.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_npy_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(matches!(read_npy(&path), Err(ArrayError::Format { .. })));
        assert!(matches!(
            read_npy(&dir.path().join("missing.npy")),
            Err(ArrayError::Io { .. })
        ));
        let unwritable = dir.path().join("no-such-dir").join("x.npy");
        assert!(write_npy(&unwritable, &[1], &[0.0]).is_err());
    }
}
