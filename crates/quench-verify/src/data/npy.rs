//! `.npy` and `.npz` arrays, read whole or row by row from disk.
//!
//! [`open_npy`] and [`open_npz`] read only the `.npy` headers (magic, format
//! version, and the `descr` / `fortran_order` / `shape` dictionary, parsed by
//! ndarray-npy) and check that the file holds exactly the data the header
//! declares. The array itself stays on disk as [`NpyRows`]: a file, the byte
//! offset of its first row, its element type and shape. Rows are read on
//! request with a positioned read on a freshly opened file, so one `NpyRows`
//! serves several threads at once, and decoded by ndarray-npy's own element
//! readers: lazy and whole-file reads accept the same element types (both
//! byte orders) and give the same values.
//!
//! Two cases are read whole instead ([`Opened::Whole`]): Fortran-order arrays,
//! whose rows are not contiguous, and compressed `.npz` entries
//! (`np.savez_compressed`), which cannot be read at an offset. An `.npz` entry
//! stored uncompressed (`np.savez`) is an `.npy` file at an offset of the
//! archive and is read like one.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ndarray_npy::npy::header::{Header, ReadHeaderError};
use ndarray_npy::{ReadNpyError, ReadNpzError};
use quench_onnx::proto::tensor_proto::DataType;
use tract_onnx::prelude::tract_data::half::{bf16, f16};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::{ArrayData, DataError};

/// Element types an `.npy` file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NpyKind {
    F32,
    F64,
    F16,
    /// numpy has no bfloat16; ml_dtypes' `bfloat16` arrays are saved with
    /// the descriptor `'<V2'` (2-byte void), which is read as bf16. (Its
    /// 1-byte types, float8 and int4, share `'|V1'` and are not told apart.)
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

/// A parsed `.npy` type descriptor: the element type and its byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NpyType {
    kind: NpyKind,
    big_endian: bool,
}

impl NpyType {
    /// Parses the header's descriptor (numpy's `dtype.str`: an optional
    /// byte order `<`, `>`, `=` or `|`, a kind letter and a size in bytes);
    /// `None` for anything else (structured dtypes, strings, complex, ...).
    fn of(header: &Header) -> Option<NpyType> {
        let d = header.type_descriptor.to_string();
        let d = d
            .strip_prefix('\'')
            .and_then(|d| d.strip_suffix('\''))
            .or_else(|| d.strip_prefix('"').and_then(|d| d.strip_suffix('"')))?;
        let (order, code) = match d.chars().next()? {
            c @ ('<' | '>' | '=' | '|') => (Some(c), &d[1..]),
            _ => (None, d),
        };
        let kind = match code {
            "f2" => NpyKind::F16,
            "f4" => NpyKind::F32,
            "f8" => NpyKind::F64,
            "V2" => NpyKind::BF16,
            "i1" => NpyKind::I8,
            "i2" => NpyKind::I16,
            "i4" => NpyKind::I32,
            "i8" => NpyKind::I64,
            "u1" => NpyKind::U8,
            "u2" => NpyKind::U16,
            "u4" => NpyKind::U32,
            "u8" => NpyKind::U64,
            "b1" | "?" => NpyKind::Bool,
            _ => return None,
        };
        // `|` (byte order not applicable) only for one-byte types.
        if order == Some('|') && kind.size() != 1 {
            return None;
        }
        let big_endian = match order {
            Some('>') => true,
            Some('<') => false,
            _ => cfg!(target_endian = "big"),
        };
        Some(NpyType { kind, big_endian })
    }

    /// Decodes `bytes` (exactly `numel` elements) into an array of `shape`
    /// (C order, or Fortran order when `fortran`), returned in standard
    /// layout. A bool byte other than 0 or 1 is an error, as numpy's own
    /// check would make it.
    fn decode(
        self,
        bytes: &[u8],
        shape: &[usize],
        fortran: bool,
    ) -> Result<ArrayData, ReadNpyError> {
        let size = self.kind.size() as usize;
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(ReadNpyError::LengthOverflow)?;
        match numel.checked_mul(size) {
            Some(n) if n == bytes.len() => {}
            Some(n) if n > bytes.len() => return Err(ReadNpyError::MissingData),
            Some(n) => return Err(ReadNpyError::ExtraBytes(bytes.len() - n)),
            None => return Err(ReadNpyError::LengthOverflow),
        }
        let be = self.big_endian;
        fn arr<T: Clone>(
            v: Vec<T>,
            shape: &[usize],
            fortran: bool,
        ) -> Result<ArrayD<T>, ReadNpyError> {
            let shape = IxDyn(shape);
            let a = if fortran {
                ArrayD::from_shape_vec(shape.f(), v)
            } else {
                ArrayD::from_shape_vec(shape, v)
            }
            .map_err(|e| ReadNpyError::ParseData(Box::new(e)))?;
            Ok(if a.is_standard_layout() {
                a
            } else {
                a.as_standard_layout().into_owned()
            })
        }
        macro_rules! num {
            ($t:ty, $n:expr, $variant:ident) => {{
                let v: Vec<$t> = bytes
                    .chunks_exact($n)
                    .map(|c| {
                        let mut b = [0u8; $n];
                        b.copy_from_slice(c);
                        if be {
                            <$t>::from_be_bytes(b)
                        } else {
                            <$t>::from_le_bytes(b)
                        }
                    })
                    .collect();
                arr(v, shape, fortran).map(ArrayData::$variant)
            }};
        }
        macro_rules! half {
            ($t:ty, $variant:ident) => {{
                let v: Vec<$t> = bytes
                    .chunks_exact(2)
                    .map(|c| {
                        let b = [c[0], c[1]];
                        <$t>::from_bits(if be {
                            u16::from_be_bytes(b)
                        } else {
                            u16::from_le_bytes(b)
                        })
                    })
                    .collect();
                arr(v, shape, fortran).map(ArrayData::$variant)
            }};
        }
        match self.kind {
            NpyKind::F32 => num!(f32, 4, F32),
            NpyKind::F64 => num!(f64, 8, F64),
            NpyKind::F16 => half!(f16, F16),
            NpyKind::BF16 => half!(bf16, BF16),
            NpyKind::I64 => num!(i64, 8, I64),
            NpyKind::I32 => num!(i32, 4, I32),
            NpyKind::I16 => num!(i16, 2, I16),
            NpyKind::I8 => num!(i8, 1, I8),
            NpyKind::U64 => num!(u64, 8, U64),
            NpyKind::U32 => num!(u32, 4, U32),
            NpyKind::U16 => num!(u16, 2, U16),
            NpyKind::U8 => num!(u8, 1, U8),
            NpyKind::Bool => {
                if let Some(b) = bytes.iter().find(|b| **b > 1) {
                    return Err(ReadNpyError::ParseData(
                        format!("bool byte {b} is neither 0 nor 1").into(),
                    ));
                }
                arr(bytes.iter().map(|b| *b == 1).collect(), shape, fortran).map(ArrayData::Bool)
            }
        }
    }
}

impl NpyKind {
    /// Bytes per element on disk.
    fn size(self) -> u64 {
        match self {
            NpyKind::F64 | NpyKind::I64 | NpyKind::U64 => 8,
            NpyKind::F32 | NpyKind::I32 | NpyKind::U32 => 4,
            NpyKind::F16 | NpyKind::BF16 | NpyKind::I16 | NpyKind::U16 => 2,
            NpyKind::I8 | NpyKind::U8 | NpyKind::Bool => 1,
        }
    }

    /// The ONNX element type code, as [`ArrayData::elem_type`] gives it.
    fn elem_type(self) -> i32 {
        let dt = match self {
            NpyKind::F32 => DataType::Float,
            NpyKind::F64 => DataType::Double,
            NpyKind::F16 => DataType::Float16,
            NpyKind::BF16 => DataType::Bfloat16,
            NpyKind::I64 => DataType::Int64,
            NpyKind::I32 => DataType::Int32,
            NpyKind::I16 => DataType::Int16,
            NpyKind::I8 => DataType::Int8,
            NpyKind::U64 => DataType::Uint64,
            NpyKind::U32 => DataType::Uint32,
            NpyKind::U16 => DataType::Uint16,
            NpyKind::U8 => DataType::Uint8,
            NpyKind::Bool => DataType::Bool,
        };
        dt as i32
    }

    /// The short name, as [`ArrayData::dtype_name`] gives it.
    fn dtype_name(self) -> &'static str {
        match self {
            NpyKind::F32 => "f32",
            NpyKind::F64 => "f64",
            NpyKind::F16 => "f16",
            NpyKind::BF16 => "bf16",
            NpyKind::I64 => "i64",
            NpyKind::I32 => "i32",
            NpyKind::I16 => "i16",
            NpyKind::I8 => "i8",
            NpyKind::U64 => "u64",
            NpyKind::U32 => "u32",
            NpyKind::U16 => "u16",
            NpyKind::U8 => "u8",
            NpyKind::Bool => "bool",
        }
    }
}

/// An array found by [`open_npy`] or [`open_npz`].
#[derive(Debug)]
pub(super) enum Opened {
    /// Left on disk, read by rows.
    Rows(NpyRows),
    /// Read whole (Fortran order, compressed `.npz` entry).
    Whole(ArrayData),
}

/// An array `[N, ...]` in C order on disk, read row by row; after a split,
/// a window of the stored rows. A rank-0 array has no rows and is only read
/// whole.
#[derive(Debug, Clone)]
pub(super) struct NpyRows {
    path: PathBuf,
    /// Whether `path` is an `.npz` archive (for the error variant).
    in_npz: bool,
    /// The descriptor and layout read from the file; `shape` is the
    /// window's.
    header: Header,
    ty: NpyType,
    /// Byte offset of the window's first row (of the value, for rank 0).
    offset: u64,
    /// Bytes per row (per value, for rank 0).
    row_bytes: u64,
}

impl NpyRows {
    /// Describes the C-order array `header` declares at `offset` of `path`,
    /// followed by `available` bytes that must be exactly its data.
    fn new(
        path: &Path,
        in_npz: bool,
        header: Header,
        ty: NpyType,
        offset: u64,
        available: u64,
    ) -> Result<NpyRows, ReadNpyError> {
        let row_dims = header.shape.get(1..).unwrap_or(&[]);
        let row_bytes = row_dims
            .iter()
            .try_fold(ty.kind.size(), |acc, &d| acc.checked_mul(d as u64))
            .ok_or(ReadNpyError::LengthOverflow)?;
        let total = match header.shape.first() {
            Some(&n) => row_bytes.checked_mul(n as u64),
            None => Some(row_bytes),
        }
        .filter(|&t| usize::try_from(t).is_ok())
        .ok_or(ReadNpyError::LengthOverflow)?;
        if available < total {
            return Err(ReadNpyError::MissingData);
        }
        if available > total {
            let extra = usize::try_from(available - total).unwrap_or(usize::MAX);
            return Err(ReadNpyError::ExtraBytes(extra));
        }
        Ok(NpyRows {
            path: path.to_path_buf(),
            in_npz,
            header,
            ty,
            offset,
            row_bytes,
        })
    }

    /// Shape of the window, rows first.
    pub(super) fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// Number of rows (0 for a rank-0 array).
    pub(super) fn count(&self) -> usize {
        self.shape().first().copied().unwrap_or(0)
    }

    pub(super) fn elem_type(&self) -> i32 {
        self.ty.kind.elem_type()
    }

    pub(super) fn dtype_name(&self) -> &'static str {
        self.ty.kind.dtype_name()
    }

    /// Rows `range`, the row axis kept; the caller checks that the range
    /// lies within `0..count()`.
    pub(super) fn rows(&self, range: Range<usize>) -> Result<ArrayData, DataError> {
        let mut shape = self.shape().to_vec();
        if let Some(n) = shape.first_mut() {
            *n = range.len();
        }
        self.read(range.start, &shape)
    }

    /// Row `i`, the row axis removed; the caller checks `i < count()`.
    pub(super) fn row(&self, i: usize) -> Result<ArrayData, DataError> {
        let shape = self.shape().get(1..).unwrap_or(&[]).to_vec();
        self.read(i, &shape)
    }

    /// The whole window (a rank-0 array included).
    pub(super) fn all(&self) -> Result<ArrayData, DataError> {
        self.read(0, &self.header.shape)
    }

    /// Rows `0..at` and `at..`; a rank-0 array goes whole to both.
    pub(super) fn split(self, at: usize) -> (NpyRows, NpyRows) {
        let n = self.count();
        if self.shape().is_empty() {
            return (self.clone(), self);
        }
        let at = at.min(n);
        let mut head = self.clone();
        head.header.shape[0] = at;
        let mut tail = self;
        tail.offset += at as u64 * tail.row_bytes;
        tail.header.shape[0] = n - at;
        (head, tail)
    }

    /// Reads the elements of `shape` starting at row `first_row`.
    fn read(&self, first_row: usize, shape: &[usize]) -> Result<ArrayData, DataError> {
        let numel: usize = shape.iter().product();
        let start = self.offset + first_row as u64 * self.row_bytes;
        let mut file = File::open(&self.path).map_err(|e| self.io_error(e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| self.io_error(e))?;
        // `numel` elements of this window were checked to fit in memory
        // when the file was opened.
        let mut bytes = vec![0u8; numel * self.ty.kind.size() as usize];
        file.read_exact(&mut bytes).map_err(|e| self.io_error(e))?;
        self.ty
            .decode(&bytes, shape, false)
            .map_err(|e| self.format_error(e))
    }

    /// A read error; running out of data means the file has shrunk since it
    /// was opened.
    fn io_error(&self, source: io::Error) -> DataError {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            return self.format_error(ReadNpyError::MissingData);
        }
        DataError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn format_error(&self, source: ReadNpyError) -> DataError {
        let path = self.path.clone();
        if self.in_npz {
            DataError::Npz {
                path,
                source: ReadNpzError::Npy(source),
            }
        } else {
            DataError::Npy { path, source }
        }
    }
}

/// Reads an `.npy` header from `reader`, which holds `len` bytes; returns
/// it with its length in bytes.
fn read_header(reader: impl Read, len: u64) -> Result<(Header, u64), ReadHeaderError> {
    let mut limited = reader.take(len);
    let header = Header::from_reader(&mut limited)?;
    Ok((header, len - limited.limit()))
}

/// Opens the `.npy` file `path` (array `name`, for messages), reading only
/// its header unless the array is in Fortran order.
pub(super) fn open_npy(path: &Path, name: &str) -> Result<Opened, DataError> {
    let npy_err = |source| DataError::Npy {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_regular(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let (header, header_len) =
        read_header(&mut file, len).map_err(|e| npy_err(ReadNpyError::from(e)))?;
    let Some(ty) = NpyType::of(&header) else {
        return Err(DataError::UnsupportedNpyType {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: header.type_descriptor.to_string(),
        });
    };
    if header.layout.is_fortran() {
        return read_npy_file(path, name).map(Opened::Whole);
    }
    NpyRows::new(path, false, header, ty, header_len, len - header_len)
        .map(Opened::Rows)
        .map_err(npy_err)
}

/// Opens every array of the `.npz` file `path`, sorted by name (a `.npy`
/// suffix removed, as numpy does). Entries stored uncompressed are left on
/// disk; compressed ones are read whole.
pub(super) fn open_npz(path: &Path) -> Result<Vec<(String, Opened)>, DataError> {
    let zip_err = |e: ZipError| DataError::Npz {
        path: path.to_path_buf(),
        source: ReadNpzError::Zip(e),
    };
    let npy_err = |e: ReadNpyError| DataError::Npz {
        path: path.to_path_buf(),
        source: ReadNpzError::Npy(e),
    };
    let file = open_regular(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
    let mut out = Vec::with_capacity(zip.len());
    let mut whole = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index_raw(i).map_err(zip_err)?;
        let full = entry.name();
        let name = full.strip_suffix(".npy").unwrap_or(full).to_string();
        let stored = entry.compression() == CompressionMethod::Stored
            && !entry.encrypted()
            && entry.size() == entry.compressed_size();
        if !stored {
            whole.push(name);
            continue;
        }
        let len = entry.compressed_size();
        let data_start = entry.data_start();
        let (header, header_len) =
            read_header(&mut entry, len).map_err(|e| npy_err(ReadNpyError::from(e)))?;
        let Some(ty) = NpyType::of(&header) else {
            return Err(DataError::UnsupportedNpyType {
                path: path.to_path_buf(),
                name,
                dtype: header.type_descriptor.to_string(),
            });
        };
        if header.layout.is_fortran() {
            whole.push(name);
            continue;
        }
        let rows = NpyRows::new(
            path,
            true,
            header,
            ty,
            data_start + header_len,
            len - header_len,
        )
        .map_err(npy_err)?;
        out.push((name, Opened::Rows(rows)));
    }
    if !whole.is_empty() {
        for (name, a) in read_npz_entries(path, whole)? {
            out.push((name, Opened::Whole(a)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Why a whole `.npy` image could not be read.
enum WholeError {
    Npy(ReadNpyError),
    /// The descriptor of an unsupported element type.
    Unsupported(String),
}

/// Reads a whole `.npy` image (header and data, either memory order).
fn parse_npy(bytes: &[u8]) -> Result<ArrayData, WholeError> {
    let mut reader = bytes;
    let header =
        Header::from_reader(&mut reader).map_err(|e| WholeError::Npy(ReadNpyError::from(e)))?;
    let ty = NpyType::of(&header)
        .ok_or_else(|| WholeError::Unsupported(header.type_descriptor.to_string()))?;
    ty.decode(reader, &header.shape, header.layout.is_fortran())
        .map_err(WholeError::Npy)
}

/// Reads the whole `.npy` file `path` (array `name`, for messages).
pub(super) fn read_npy_file(path: &Path, name: &str) -> Result<ArrayData, DataError> {
    let mut bytes = Vec::new();
    open_regular(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse_npy(&bytes).map_err(|e| match e {
        WholeError::Npy(source) => DataError::Npy {
            path: path.to_path_buf(),
            source,
        },
        WholeError::Unsupported(dtype) => DataError::UnsupportedNpyType {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype,
        },
    })
}

/// Reads the arrays `names` of the `.npz` file `path` whole (entries named
/// `<name>.npy` or `<name>`).
fn read_npz_entries(
    path: &Path,
    names: Vec<String>,
) -> Result<Vec<(String, ArrayData)>, DataError> {
    let zip_err = |e: ZipError| DataError::Npz {
        path: path.to_path_buf(),
        source: ReadNpzError::Zip(e),
    };
    let file = open_regular(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let with_suffix = format!("{name}.npy");
        let mut entry = match zip.index_for_name(&with_suffix) {
            Some(i) => zip.by_index(i),
            None => zip.by_name(&name),
        }
        .map_err(zip_err)?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| zip_err(ZipError::Io(e)))?;
        let a = parse_npy(&bytes).map_err(|e| match e {
            WholeError::Npy(source) => DataError::Npz {
                path: path.to_path_buf(),
                source: ReadNpzError::Npy(source),
            },
            WholeError::Unsupported(dtype) => DataError::UnsupportedNpyType {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype,
            },
        })?;
        out.push((name, a));
    }
    Ok(out)
}

/// Opens `path` for reading if it is a regular file (after symlinks), and
/// refuses anything else first: opening a FIFO blocks until a writer
/// appears (a FIFO named `input.npy` hung the loader), and a device can
/// stream without end.
pub(super) fn open_regular(path: &Path) -> std::io::Result<File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO or device)",
        ));
    }
    File::open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray_npy::{NpzWriter, WriteNpyExt};

    fn write_npy<T: ndarray_npy::WritableElement>(
        dir: &Path,
        name: &str,
        a: &ArrayD<T>,
    ) -> PathBuf {
        let path = dir.join(format!("{name}.npy"));
        a.write_npy(File::create(&path).unwrap()).unwrap();
        path
    }

    /// An `.npy` file written by hand: format `major`.0, C order.
    fn npy_bytes(major: u8, descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let len_bytes = if major == 1 { 2 } else { 4 };
        let unpadded = 6 + 2 + len_bytes + dict.len() + 1;
        dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        dict.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn rows_of(opened: Opened) -> NpyRows {
        match opened {
            Opened::Rows(r) => r,
            Opened::Whole(a) => panic!("read whole: {a:?}"),
        }
    }

    /// Same element type, shape and bytes (NaNs and signed zeros included).
    fn assert_same_bits(a: &ArrayData, b: &ArrayData) {
        assert_eq!(a.dtype_name(), b.dtype_name());
        assert_eq!(a.shape(), b.shape());
        assert_eq!(
            a.to_tensor_proto("").raw_data,
            b.to_tensor_proto("").raw_data
        );
    }

    /// Every row, some row ranges and the whole array agree with `eager`.
    fn check_rows(rows: &NpyRows, eager: &ArrayData) {
        assert_eq!(rows.shape(), eager.shape());
        assert_eq!(rows.dtype_name(), eager.dtype_name());
        assert_eq!(rows.elem_type(), eager.elem_type());
        assert_same_bits(&rows.all().unwrap(), eager);
        let n = rows.count();
        for i in 0..n {
            assert_same_bits(&rows.row(i).unwrap(), &eager.index_axis0(i).unwrap());
        }
        for r in [0..n, 1..n, 0..1, n / 2..n, 2..2] {
            assert_same_bits(
                &rows.rows(r.clone()).unwrap(),
                &eager.slice_axis0(r).unwrap(),
            );
        }
    }

    fn lazy_and_eager(path: &Path) -> (NpyRows, ArrayData) {
        let rows = rows_of(open_npy(path, "x").unwrap());
        (rows, read_npy_file(path, "x").unwrap())
    }

    #[test]
    fn lazy_rows_match_the_whole_file_reader() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let f32s: Vec<f32> = (0..30).map(|i| i as f32 * 0.37 - 4.0).collect();
        let mut f32s_special = f32s.clone();
        f32s_special[3] = f32::NAN;
        f32s_special[4] = -0.0;
        f32s_special[5] = f32::INFINITY;
        let paths = [
            write_npy(
                d,
                "f32",
                &ArrayD::from_shape_vec(IxDyn(&[5, 3, 2]), f32s_special).unwrap(),
            ),
            write_npy(
                d,
                "i64",
                &ArrayD::from_shape_vec(
                    IxDyn(&[4, 3]),
                    vec![i64::MIN, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, i64::MAX],
                )
                .unwrap(),
            ),
            write_npy(
                d,
                "u8",
                &ArrayD::from_shape_vec(IxDyn(&[6, 2]), (0..12).map(|i| (i * 21) as u8).collect())
                    .unwrap(),
            ),
            write_npy(
                d,
                "bool",
                &ArrayD::from_shape_vec(IxDyn(&[7, 3]), (0..21).map(|i| i % 3 == 0).collect())
                    .unwrap(),
            ),
            // One scalar per sample.
            write_npy(
                d,
                "scalar",
                &ArrayD::from_shape_vec(IxDyn(&[9]), f32s[..9].to_vec()).unwrap(),
            ),
            write_npy(
                d,
                "f64",
                &ArrayD::from_shape_vec(IxDyn(&[3, 1]), vec![1e300, -2.5, 0.1]).unwrap(),
            ),
            write_npy(
                d,
                "i32",
                &ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![i32::MIN, -7, 7, i32::MAX]).unwrap(),
            ),
            write_npy(
                d,
                "i8",
                &ArrayD::from_shape_vec(IxDyn(&[3]), vec![-128i8, 0, 127]).unwrap(),
            ),
        ];
        for path in &paths {
            let (rows, eager) = lazy_and_eager(path);
            check_rows(&rows, &eager);
        }
    }

    #[test]
    fn header_versions_and_byte_orders() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, -8.5];
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let expected =
            ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[3, 2]), values.to_vec()).unwrap());
        for (i, (major, descr, data)) in [
            (1, "<f4", &le),
            (2, "<f4", &le),
            (3, "<f4", &le),
            (1, ">f4", &be),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("v{i}.npy"));
            std::fs::write(&path, npy_bytes(major, descr, &[3, 2], data)).unwrap();
            let (rows, eager) = lazy_and_eager(&path);
            assert_same_bits(&eager, &expected);
            check_rows(&rows, &expected);
        }
        // One-byte types in numpy's `|` form and without it.
        let path = dir.path().join("u1.npy");
        std::fs::write(&path, npy_bytes(2, "u1", &[2], &[3, 250])).unwrap();
        let (rows, eager) = lazy_and_eager(&path);
        check_rows(&rows, &eager);
        assert_eq!(eager.dtype_name(), "u8");
    }

    #[test]
    fn sizes_are_checked_at_open_and_data_at_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.npy");
        let data: Vec<u8> = (0..24).collect();
        std::fs::write(&path, npy_bytes(1, "<f4", &[2, 3], &data[..20])).unwrap();
        let e = open_npy(&path, "short").unwrap_err();
        assert!(
            matches!(&e, DataError::Npy { path: p, source: ReadNpyError::MissingData } if *p == path),
            "{e:?}"
        );
        std::fs::write(
            &path,
            npy_bytes(1, "<f4", &[2, 3], &[data.as_slice(), &[0]].concat()),
        )
        .unwrap();
        let e = open_npy(&path, "short").unwrap_err();
        assert!(
            matches!(
                &e,
                DataError::Npy {
                    source: ReadNpyError::ExtraBytes(1),
                    ..
                }
            ),
            "{e:?}"
        );

        let path = dir.path().join("c8.npy");
        std::fs::write(&path, npy_bytes(1, "<c8", &[2], &[0; 16])).unwrap();
        let e = open_npy(&path, "c8").unwrap_err();
        assert!(
            matches!(&e, DataError::UnsupportedNpyType { dtype, .. } if dtype == "'<c8'"),
            "{e:?}"
        );
        assert!(e.to_string().contains("c8.npy"), "{e}");

        // A bool byte other than 0/1 shows when its row is read.
        let path = dir.path().join("bool.npy");
        std::fs::write(&path, npy_bytes(1, "|b1", &[2, 2], &[0, 1, 2, 1])).unwrap();
        let rows = rows_of(open_npy(&path, "bool").unwrap());
        assert!(rows.row(0).is_ok());
        let e = rows.row(1).unwrap_err();
        assert!(
            matches!(&e, DataError::Npy { path: p, .. } if *p == path),
            "{e:?}"
        );

        // The file shrank or vanished after it was opened.
        std::fs::write(&path, npy_bytes(1, "|b1", &[2, 2], &[0, 1])).unwrap();
        let e = rows.row(1).unwrap_err();
        assert!(
            matches!(
                &e,
                DataError::Npy {
                    source: ReadNpyError::MissingData,
                    ..
                }
            ),
            "{e:?}"
        );
        std::fs::remove_file(&path).unwrap();
        let e = rows.rows(0..2).unwrap_err();
        assert!(
            matches!(&e, DataError::Io { path: p, .. } if *p == path),
            "{e:?}"
        );
    }

    /// Every element type numpy (and ml_dtypes, for bf16) writes, in both
    /// byte orders: the values come back bit for bit, lazily by rows and
    /// whole; one byte too few or too many is an error naming the file.
    #[test]
    fn every_element_type_in_both_byte_orders() {
        let dir = tempfile::tempdir().unwrap();
        let h16 = [
            0x0000u16, 0x8000, 0x0001, 0x3c00, 0x7bff, 0xfbff, 0x7c00, 0x7e01,
        ];
        let cases: Vec<(&str, usize, ArrayData)> = vec![
            (
                "f2",
                2,
                ArrayData::F16(arr(h16.iter().map(|b| f16::from_bits(*b)).collect())),
            ),
            (
                "V2",
                2,
                ArrayData::BF16(arr(h16.iter().map(|b| bf16::from_bits(*b)).collect())),
            ),
            (
                "f4",
                4,
                ArrayData::F32(arr(vec![
                    0.0,
                    -0.0,
                    1.5,
                    f32::MIN_POSITIVE / 2.0,
                    f32::MAX,
                    f32::NEG_INFINITY,
                    f32::NAN,
                    -7.25,
                ])),
            ),
            (
                "f8",
                8,
                ArrayData::F64(arr(vec![
                    0.0,
                    -0.0,
                    1e-310,
                    1e300,
                    -1.5,
                    f64::INFINITY,
                    f64::NAN,
                    3.0,
                ])),
            ),
            (
                "i1",
                1,
                ArrayData::I8(arr(vec![i8::MIN, -1, 0, 1, 2, 3, 4, i8::MAX])),
            ),
            (
                "i2",
                2,
                ArrayData::I16(arr(vec![i16::MIN, -1, 0, 1, 2, 3, 4, i16::MAX])),
            ),
            (
                "i4",
                4,
                ArrayData::I32(arr(vec![i32::MIN, -1, 0, 1, 2, 3, 4, i32::MAX])),
            ),
            (
                "i8",
                8,
                ArrayData::I64(arr(vec![i64::MIN, -1, 0, 1, 2, 3, 4, i64::MAX])),
            ),
            (
                "u1",
                1,
                ArrayData::U8(arr(vec![0, 1, 2, 3, 4, 5, 6, u8::MAX])),
            ),
            (
                "u2",
                2,
                ArrayData::U16(arr(vec![0, 1, 2, 3, 4, 5, 6, u16::MAX])),
            ),
            (
                "u4",
                4,
                ArrayData::U32(arr(vec![0, 1, 2, 3, 4, 5, 6, u32::MAX])),
            ),
            (
                "u8",
                8,
                ArrayData::U64(arr(vec![0, 1, 2, 3, 4, 5, 1 << 63, u64::MAX])),
            ),
            (
                "b1",
                1,
                ArrayData::Bool(arr(vec![
                    true, false, true, true, false, false, true, false,
                ])),
            ),
        ];
        for (code, size, expected) in cases {
            let le = expected.to_tensor_proto("").raw_data.unwrap().to_vec();
            let be: Vec<u8> = le
                .chunks(size)
                .flat_map(|c| c.iter().rev().copied())
                .collect();
            let orders: &[(&str, &Vec<u8>)] = if size == 1 {
                &[("|", &le), ("", &le)]
            } else {
                &[("<", &le), (">", &be)]
            };
            for (order, data) in orders {
                let descr = format!("{order}{code}");
                let path = dir.path().join(format!(
                    "{code}{}.npy",
                    if *order == ">" { "be" } else { "" }
                ));
                std::fs::write(&path, npy_bytes(1, &descr, &[4, 2], data)).unwrap();
                let (rows, eager) = lazy_and_eager(&path);
                assert_same_bits(&eager, &expected);
                check_rows(&rows, &expected);
                // A file one byte short or long names itself.
                for bad in [&data[..data.len() - 1], &[data.as_slice(), &[0]].concat()] {
                    std::fs::write(&path, npy_bytes(1, &descr, &[4, 2], bad)).unwrap();
                    let e = open_npy(&path, "x").unwrap_err();
                    assert!(
                        e.to_string().contains(&*path.to_string_lossy()),
                        "{descr}: {e}"
                    );
                    assert!(
                        matches!(
                            &e,
                            DataError::Npy {
                                source: ReadNpyError::MissingData | ReadNpyError::ExtraBytes(1),
                                ..
                            }
                        ),
                        "{descr}: {e:?}"
                    );
                    let e = read_npy_file(&path, "x").unwrap_err();
                    assert!(
                        e.to_string().contains(&*path.to_string_lossy()),
                        "{descr}: {e}"
                    );
                }
            }
        }

        fn arr<T>(v: Vec<T>) -> ArrayD<T> {
            ArrayD::from_shape_vec(IxDyn(&[4, 2]), v).unwrap()
        }
    }

    #[test]
    fn fortran_order_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = ArrayD::from_shape_vec(IxDyn(&[3, 4]), (0..12).map(|i| i as f32).collect())
            .unwrap()
            .reversed_axes();
        let path = write_npy(dir.path(), "f", &f);
        match open_npy(&path, "f").unwrap() {
            Opened::Whole(a) => assert_eq!(a, ArrayData::F32(f.as_standard_layout().into_owned())),
            Opened::Rows(r) => panic!("Fortran order read lazily: {r:?}"),
        }
    }

    fn npz_arrays() -> (ArrayD<f32>, ArrayD<i64>, ArrayD<bool>) {
        (
            ArrayD::from_shape_vec(IxDyn(&[4, 2, 3]), (0..24).map(|i| i as f32 - 0.5).collect())
                .unwrap(),
            ArrayD::from_shape_vec(IxDyn(&[4]), vec![3, 1, 4, 1]).unwrap(),
            ArrayD::from_shape_vec(IxDyn(&[4, 1]), vec![true, false, false, true]).unwrap(),
        )
    }

    fn write_npz(path: &Path, compressed: bool) {
        let file = File::create(path).unwrap();
        let mut w = if compressed {
            NpzWriter::new_compressed(file)
        } else {
            NpzWriter::new(file)
        };
        let (x, labels, mask) = npz_arrays();
        w.add_array("x", &x).unwrap();
        w.add_array("labels", &labels).unwrap();
        w.add_array("mask", &mask).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn uncompressed_npz_entries_are_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        write_npz(&path, false);
        let eager =
            read_npz_entries(&path, vec!["labels".into(), "mask".into(), "x".into()]).unwrap();
        let opened = open_npz(&path).unwrap();
        let names: Vec<&str> = opened.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["labels", "mask", "x"]);
        for ((name, o), (_, e)) in opened.into_iter().zip(&eager) {
            let rows = rows_of(o);
            assert!(rows.in_npz, "{name}");
            check_rows(&rows, e);
        }
        let (x, ..) = npz_arrays();
        assert_eq!(eager[2].1, ArrayData::F32(x));
    }

    #[test]
    fn compressed_npz_entries_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        write_npz(&path, true);
        let opened = open_npz(&path).unwrap();
        let (x, labels, mask) = npz_arrays();
        let expected = [
            ArrayData::I64(labels),
            ArrayData::Bool(mask),
            ArrayData::F32(x),
        ];
        assert_eq!(opened.len(), 3);
        for ((_, o), e) in opened.into_iter().zip(&expected) {
            match o {
                Opened::Whole(a) => assert_eq!(&a, e),
                Opened::Rows(r) => panic!("compressed entry read lazily: {r:?}"),
            }
        }

        // One archive holding both kinds of entry.
        let path = dir.path().join("mixed.npz");
        let (x, labels, _) = npz_arrays();
        let mut w = NpzWriter::new(File::create(&path).unwrap());
        w.add_array("x", &x).unwrap();
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated);
        w.add_array_with_options("labels", &labels, deflated)
            .unwrap();
        w.finish().unwrap();
        let mut opened = open_npz(&path).unwrap().into_iter();
        match opened.next() {
            Some((name, Opened::Whole(a))) => {
                assert_eq!((name.as_str(), a), ("labels", ArrayData::I64(labels)))
            }
            other => panic!("{other:?}"),
        }
        match opened.next() {
            Some((name, Opened::Rows(r))) => {
                assert_eq!(name, "x");
                check_rows(&r, &ArrayData::F32(x));
            }
            other => panic!("{other:?}"),
        }
        assert!(opened.next().is_none());
    }
}
