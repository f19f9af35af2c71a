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

/// The `.npy` magic string and the header's byte alignment (NumPy's format spec, `NEP 1`).
const MAGIC: &[u8] = b"\x93NUMPY";
const ALIGN: usize = 64;
/// NumPy's room for the first axis's digits in a header (numpy/lib/format.py).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// The largest header accepted (NumPy itself caps version-1 headers at 64 KiB).
const MAX_HEADER: usize = 1 << 16;

/// The `.npy` bytes of a float32 C-order array: version 1.0, the header padded with spaces to a
/// multiple of 64 bytes and ended by a newline, then the data little-endian. NumPy reads it.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // NumPy leaves room for the first axis to grow to 21 digits in place (`_wrap_header`,
    // GROWTH_AXIS_MAX_DIGITS), then pads: magic (6) + version (2) + length (2) + dict + spaces +
    // newline, to a multiple of 64.
    let first = dims.first().map_or(21, String::len);
    dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first)));
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(ALIGN) - unpadded));
    dict.push('\n');
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[1, 0]);
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

/// Writes `data` with `shape` to `path` as `.npy`; the file appears complete or not at all.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), ArrayError> {
    let io = |source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    };
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    write_atomically(path, |file| {
        file.write_all(&npy_header(shape))?;
        for chunk in data.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            file.write_all(&bytes)?;
        }
        Ok(())
    })
    .map_err(io)
}

/// The value of `key` in a NumPy header dict (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`): the text after `'key':` up to the next top-level comma.
fn header_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}':"))? + key.len() + 3;
    let rest = dict[at..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Parses a float32 `.npy` file's bytes (format versions 1 to 3, C order, little-endian).
fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("no .npy magic".into());
    }
    let (len, at) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("format version {v} is not supported")),
    };
    if len > MAX_HEADER || at + len > bytes.len() {
        return Err(format!("a header of {len} bytes does not fit the file"));
    }
    let dict = std::str::from_utf8(&bytes[at..at + len]).map_err(|_| "header is not text")?;
    let descr = header_value(dict, "descr").ok_or("header has no descr")?;
    if !matches!(descr, "'<f4'" | "'float32'") {
        return Err(format!(
            "dtype {descr} (float32 little-endian, '<f4', is supported)"
        ));
    }
    match header_value(dict, "fortran_order") {
        Some("False") => {}
        Some("True") => return Err("Fortran order is not supported".into()),
        _ => return Err("header has no fortran_order".into()),
    }
    let shape_text = header_value(dict, "shape").ok_or("header has no shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("shape {shape_text} is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("shape {shape_text}"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape_text} overflows"))?;
    let body = &bytes[at + len..];
    // The size must be checked before allocating: a header may claim any shape.
    if n.checked_mul(4) != Some(body.len()) {
        return Err(format!(
            "shape {shape_text} needs {n} values, the file holds {} bytes of data",
            body.len()
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// Reads a float32 `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array, ArrayError> {
    let bytes = std::fs::read(path).map_err(|source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|reason| ArrayError::Format {
        path: path.to_path_buf(),
        reason,
    })
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

    /// The exact header bytes NumPy 2.4 writes for `np.save(f, np.arange(6, dtype='<f4')
    /// .reshape(2, 3))` and for an 80000-value 1-d array (printed from NumPy, pasted here).
    #[test]
    fn headers_match_numpy_byte_for_byte() {
        let numpy = |dict: &str| {
            let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
            b.extend_from_slice(dict.as_bytes());
            b.extend(std::iter::repeat_n(b' ', 117 - dict.len()));
            b.push(b'\n');
            b
        };
        let h = npy_header(&[2, 3]);
        assert_eq!(
            h,
            numpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")
        );
        assert_eq!(
            npy_header(&[80000]),
            numpy("{'descr': '<f4', 'fortran_order': False, 'shape': (80000,), }")
        );
        let mut bytes = h.clone();
        bytes.extend((0..6).flat_map(|i| (i as f32).to_le_bytes()));
        let a = parse_npy(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn hostile_headers_are_errors_not_allocations() {
        let file = |dict: &str, data: usize| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b.extend(std::iter::repeat_n(0u8, data));
            b
        };
        for (dict, data, why) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                8,
                "overflows",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }",
                8,
                "needs",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                8,
                "dtype",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
                8,
                "Fortran",
            ),
            ("{'descr': '<f4', 'shape': (2,), }", 8, "fortran_order"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': 7, }",
                4,
                "tuple",
            ),
        ] {
            let e = parse_npy(&file(dict, data)).unwrap_err();
            assert!(e.contains(why), "{dict}: {e}");
        }
        let mut short = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            4,
        );
        short[8] = 0xff; // header length beyond the file
        assert!(parse_npy(&short).is_err());
        // A scalar (shape ()) holds one value.
        let scalar = parse_npy(&file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            4,
        ));
        assert_eq!(scalar.unwrap().shape, Vec::<usize>::new());
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
