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

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::npy::header::{Header, ReadHeaderError};
use ndarray_npy::{
    NpzReader, ReadDataError, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement,
};
use quench_onnx::proto::tensor_proto::DataType;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::{ArrayData, DataError};

/// Element types an `.npy` file may hold, tried in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NpyKind {
    F32,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

const NPY_KINDS: [NpyKind; 7] = [
    NpyKind::F32,
    NpyKind::F64,
    NpyKind::I64,
    NpyKind::I32,
    NpyKind::I8,
    NpyKind::U8,
    NpyKind::Bool,
];

/// Runs `$read` with `$t` bound to the Rust element type of `$kind` and
/// converts the array it returns to [`ArrayData`].
macro_rules! read_as {
    ($kind:expr, $t:ident => $read:expr) => {
        match $kind {
            NpyKind::F32 => {
                type $t = f32;
                $read.map(ArrayData::from)
            }
            NpyKind::F64 => {
                type $t = f64;
                $read.map(ArrayData::from)
            }
            NpyKind::I64 => {
                type $t = i64;
                $read.map(ArrayData::from)
            }
            NpyKind::I32 => {
                type $t = i32;
                $read.map(ArrayData::from)
            }
            NpyKind::I8 => {
                type $t = i8;
                $read.map(ArrayData::from)
            }
            NpyKind::U8 => {
                type $t = u8;
                $read.map(ArrayData::from)
            }
            NpyKind::Bool => {
                type $t = bool;
                $read.map(ArrayData::from)
            }
        }
    };
}

impl NpyKind {
    /// The kind whose element reader accepts the header's descriptor, if
    /// any: the first one that reads zero elements without complaint.
    fn of(header: &Header) -> Option<NpyKind> {
        fn accepts<T: ReadableElement>(header: &Header) -> bool {
            T::read_to_end_exact_vec(io::empty(), &header.type_descriptor, 0).is_ok()
        }
        NPY_KINDS.into_iter().find(|kind| match kind {
            NpyKind::F32 => accepts::<f32>(header),
            NpyKind::F64 => accepts::<f64>(header),
            NpyKind::I64 => accepts::<i64>(header),
            NpyKind::I32 => accepts::<i32>(header),
            NpyKind::I8 => accepts::<i8>(header),
            NpyKind::U8 => accepts::<u8>(header),
            NpyKind::Bool => accepts::<bool>(header),
        })
    }

    /// Bytes per element on disk.
    fn size(self) -> u64 {
        match self {
            NpyKind::F64 | NpyKind::I64 => 8,
            NpyKind::F32 | NpyKind::I32 => 4,
            NpyKind::I8 | NpyKind::U8 | NpyKind::Bool => 1,
        }
    }

    /// The ONNX element type code, as [`ArrayData::elem_type`] gives it.
    fn elem_type(self) -> i32 {
        let dt = match self {
            NpyKind::F32 => DataType::Float,
            NpyKind::F64 => DataType::Double,
            NpyKind::I64 => DataType::Int64,
            NpyKind::I32 => DataType::Int32,
            NpyKind::I8 => DataType::Int8,
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
            NpyKind::I64 => "i64",
            NpyKind::I32 => "i32",
            NpyKind::I8 => "i8",
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
    kind: NpyKind,
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
        kind: NpyKind,
        offset: u64,
        available: u64,
    ) -> Result<NpyRows, ReadNpyError> {
        let row_dims = header.shape.get(1..).unwrap_or(&[]);
        let row_bytes = row_dims
            .iter()
            .try_fold(kind.size(), |acc, &d| acc.checked_mul(d as u64))
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
            kind,
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
        self.kind.elem_type()
    }

    pub(super) fn dtype_name(&self) -> &'static str {
        self.kind.dtype_name()
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
        let data = file.take(numel as u64 * self.kind.size());
        read_as!(self.kind, T => read_array::<T>(data, &self.header, shape, numel)).map_err(|e| {
            match e {
                ReadDataError::Io(e) => self.io_error(e),
                other => self.format_error(other.into()),
            }
        })
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

/// Reads exactly `numel` elements of `header`'s type from `data`.
fn read_array<T: ReadableElement>(
    data: impl Read,
    header: &Header,
    shape: &[usize],
    numel: usize,
) -> Result<ArrayD<T>, ReadDataError> {
    let values = T::read_to_end_exact_vec(data, &header.type_descriptor, numel)?;
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| ReadDataError::ParseData(Box::new(e)))
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
    let mut file = File::open(path).map_err(|source| DataError::Io {
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
    if header.layout.is_fortran() {
        return read_npy_file(path, name).map(Opened::Whole);
    }
    let Some(kind) = NpyKind::of(&header) else {
        return Err(DataError::UnsupportedNpyType {
            path: path.to_path_buf(),
            name: name.to_string(),
            dtype: header.type_descriptor.to_string(),
        });
    };
    NpyRows::new(path, false, header, kind, header_len, len - header_len)
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
    let file = File::open(path).map_err(|source| DataError::Io {
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
        if header.layout.is_fortran() {
            whole.push(name);
            continue;
        }
        let Some(kind) = NpyKind::of(&header) else {
            return Err(DataError::UnsupportedNpyType {
                path: path.to_path_buf(),
                name,
                dtype: header.type_descriptor.to_string(),
            });
        };
        let rows = NpyRows::new(
            path,
            true,
            header,
            kind,
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

/// Reads an array of whichever supported element type it holds: `read` is
/// called per type until the descriptor matches. The inner error is the
/// descriptor of an unsupported type.
fn read_any<E>(
    mut read: impl FnMut(NpyKind) -> Result<ArrayData, E>,
    wrong_descriptor: impl Fn(&E) -> Option<String>,
) -> Result<Result<ArrayData, String>, E> {
    let mut descriptor = String::new();
    for kind in NPY_KINDS {
        match read(kind) {
            Ok(a) => return Ok(Ok(a.into_standard_layout())),
            Err(e) => match wrong_descriptor(&e) {
                Some(d) => descriptor = d,
                None => return Err(e),
            },
        }
    }
    Ok(Err(descriptor))
}

/// Reads the whole `.npy` file `path` (array `name`, for messages).
pub(super) fn read_npy_file(path: &Path, name: &str) -> Result<ArrayData, DataError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let b = bytes.as_slice();
    read_any(
        |kind| read_as!(kind, T => ArrayD::<T>::read_npy(b)),
        |e| match e {
            ReadNpyError::WrongDescriptor(d) => Some(d.to_string()),
            _ => None,
        },
    )
    .map_err(|source| DataError::Npy {
        path: path.to_path_buf(),
        source,
    })?
    .map_err(|dtype| DataError::UnsupportedNpyType {
        path: path.to_path_buf(),
        name: name.to_string(),
        dtype,
    })
}

/// Reads the arrays `names` of the `.npz` file `path` whole.
fn read_npz_entries(
    path: &Path,
    names: Vec<String>,
) -> Result<Vec<(String, ArrayData)>, DataError> {
    let npz_err = |source| DataError::Npz {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut npz = NpzReader::new(BufReader::new(file)).map_err(npz_err)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let a = read_any(
            |kind| read_as!(kind, T => npz.by_name::<ndarray::OwnedRepr<T>, IxDyn>(&name)),
            |e| match e {
                ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d)) => Some(d.to_string()),
                _ => None,
            },
        )
        .map_err(npz_err)?
        .map_err(|dtype| DataError::UnsupportedNpyType {
            path: path.to_path_buf(),
            name: name.clone(),
            dtype,
        })?;
        out.push((name, a));
    }
    Ok(out)
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

        let path = dir.path().join("u2.npy");
        std::fs::write(&path, npy_bytes(1, "<u2", &[2], &[0; 4])).unwrap();
        let e = open_npy(&path, "u2").unwrap_err();
        assert!(
            matches!(&e, DataError::UnsupportedNpyType { dtype, .. } if dtype == "'<u2'"),
            "{e:?}"
        );

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
