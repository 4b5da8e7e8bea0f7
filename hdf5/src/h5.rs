//! The HDF5 C library calls this crate makes, each behind a small safe
//! function.
//!
//! The high-level `hdf5` crate (hdf5-metno) cannot express what the
//! original's readers need: a compound member that is one 2-D array type
//! (it nests 1-D arrays, which PyTables misreads) and PyTables' fixed-length
//! string attributes. So the few calls needed go to the C API directly,
//! through `hdf5-metno-sys`, under hdf5-metno's library lock and with its
//! error-stack messages. Nothing here knows about events or layouts.
//!
//! Every handle is an [`Id`] that closes itself; every failure is a
//! `String` saying which call failed and what HDF5 said.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hdf5_sys::h5::{herr_t, hsize_t};
use hdf5_sys::h5a::{H5Aclose, H5Acreate2, H5Adelete, H5Aexists, H5Awrite};
use hdf5_sys::h5d::{
    H5D_alloc_time_t, H5Dclose, H5Dcreate2, H5Dset_extent, H5Dwrite, H5Dwrite_chunk,
};
use hdf5_sys::h5f::{H5F_ACC_TRUNC, H5F_SCOPE_LOCAL, H5Fclose, H5Fcreate, H5Fflush};
use hdf5_sys::h5g::{H5Gclose, H5Gcreate2};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{
    H5P_CLS_DATASET_ACCESS, H5P_CLS_DATASET_CREATE, H5P_CLS_FILE_ACCESS, H5P_CLS_FILE_CREATE,
    H5P_DEFAULT, H5Pclose, H5Pcreate, H5Pset_alloc_time, H5Pset_chunk, H5Pset_chunk_cache,
    H5Pset_deflate, H5Pset_shuffle,
};
use hdf5_sys::h5s::{
    H5S_SELECT_SET, H5S_UNLIMITED, H5S_class_t, H5Sclose, H5Screate, H5Screate_simple,
    H5Sselect_hyperslab,
};
use hdf5_sys::h5t::{
    H5T_C_S1, H5T_COMPOUND, H5T_cset_t, H5T_str_t, H5Tarray_create2, H5Tclose, H5Tcopy, H5Tcreate,
    H5Tinsert, H5Tset_cset, H5Tset_size, H5Tset_strpad,
};

pub(crate) use hdf5_sys::h5t::{
    H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32LE, H5T_STD_I64LE, H5T_STD_U32LE, H5T_STD_U64LE,
};

/// What a failed call reports.
pub(crate) type H5Result<T> = Result<T, String>;

type Close = unsafe extern "C" fn(hid_t) -> herr_t;

/// An open HDF5 object, closed when dropped.
pub(crate) struct Id {
    id: hid_t,
    close: Close,
}

impl Id {
    pub(crate) fn raw(&self) -> hid_t {
        self.id
    }

    /// Closes now, reporting a failure (a file's close writes its metadata).
    pub(crate) fn close(self, what: &str) -> H5Result<()> {
        let (id, close) = (self.id, self.close);
        std::mem::forget(self);
        // SAFETY: `id` is an open identifier of the kind `close` closes; it
        // is closed once (the drop that would close it again is forgotten).
        locked(|| check(unsafe { close(id) }, what))
    }
}

impl Drop for Id {
    fn drop(&mut self) {
        // SAFETY: as in `close`; a failure on drop has nobody to tell.
        locked(|| unsafe { (self.close)(self.id) });
    }
}

/// Runs `f` under hdf5-metno's library lock (which also initialises the
/// library, so the `H5T_*` type globals are valid, and turns off HDF5's
/// own printing of error stacks: failures come back as our messages).
fn locked<T>(f: impl FnOnce() -> T) -> T {
    hdf5::sync::sync(f)
}

fn check(ret: herr_t, what: &str) -> H5Result<()> {
    hdf5::h5check(ret)
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
}

fn check_id(id: hid_t, what: &str, close: Close) -> H5Result<Id> {
    hdf5::h5check(id)
        .map(|id| Id { id, close })
        .map_err(|e| format!("{what}: {e}"))
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("names and attribute values here have no NUL")
}

/// Creates (truncates) the HDF5 file at `path`, which the caller has just
/// created empty itself (so that an existing file is never overwritten).
pub(crate) fn create_file(path: &Path) -> H5Result<Id> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", path.display()))?;
    locked(|| {
        // SAFETY: a file-access property list, closed by its Id.
        let fapl = check_id(
            unsafe { H5Pcreate(*H5P_CLS_FILE_ACCESS) },
            "file access properties",
            H5Pclose,
        )?;
        // HDF5 locks a file it writes, so a reader could not look at a run
        // while it is being written: we take no lock (one writer per file is
        // ensured by creating it with O_EXCL). Older libraries lock; readers
        // of those set HDF5_USE_FILE_LOCKING=FALSE (docs/formats.md).
        #[cfg(h5_file_locking)]
        // SAFETY: a file-access property list; plain flags.
        check(
            unsafe { hdf5_sys::h5p::H5Pset_file_locking(fapl.raw(), 0, 1) },
            "file locking",
        )?;
        // SAFETY: a file-creation property list, closed by its Id.
        let fcpl = check_id(
            unsafe { H5Pcreate(*H5P_CLS_FILE_CREATE) },
            "file creation properties",
            H5Pclose,
        )?;
        // Space a rewritten chunk leaves is never reused. A compressed chunk
        // that grows is written elsewhere; were its old place reused before
        // the next flush, a writer killed then would leave a file whose
        // flushed index points at other data ("filter returned failure"
        // in h5py: seen in the kill -9 test). The cost is the old copies of
        // each second's last, partial chunk.
        #[cfg(h5_fspace_strategy)]
        // SAFETY: a file-creation property list; plain values.
        check(
            unsafe {
                hdf5_sys::h5p::H5Pset_file_space_strategy(
                    fcpl.raw(),
                    hdf5_sys::h5f::H5F_fspace_strategy_t::H5F_FSPACE_STRATEGY_NONE,
                    0,
                    1,
                )
            },
            "file space strategy",
        )?;
        // SAFETY: `c` is a valid C string; valid property lists.
        let id = unsafe { H5Fcreate(c.as_ptr(), H5F_ACC_TRUNC, fcpl.raw(), fapl.raw()) };
        check_id(id, "creating the HDF5 file", H5Fclose)
    })
}

/// Writes everything the library holds for `file` to the file.
pub(crate) fn flush(file: &Id) -> H5Result<()> {
    // SAFETY: `file` is an open file identifier.
    locked(|| check(unsafe { H5Fflush(file.raw(), H5F_SCOPE_LOCAL) }, "flushing"))
}

/// Creates group `name` in `loc`.
pub(crate) fn create_group(loc: &Id, name: &str) -> H5Result<Id> {
    let n = cstr(name);
    locked(|| {
        // SAFETY: `loc` is an open file or group, `n` a valid C string.
        let id =
            unsafe { H5Gcreate2(loc.raw(), n.as_ptr(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) };
        check_id(id, &format!("creating group {name}"), H5Gclose)
    })
}

/// A member type of a compound: a scalar type or an n-D array of one.
/// (The types are the library's globals, valid once it is initialised,
/// so they are read under the lock.)
pub(crate) enum MemberType {
    Scalar(&'static hid_t),
    Array(&'static hid_t, &'static [hsize_t]),
}

/// Builds a packed compound type of `size` bytes from (name, offset, type).
pub(crate) fn compound(size: usize, members: &[(&str, usize, MemberType)]) -> H5Result<Id> {
    locked(|| {
        // SAFETY: creating an empty compound type of `size` bytes.
        let t = check_id(
            unsafe { H5Tcreate(H5T_COMPOUND, size) },
            "compound type",
            H5Tclose,
        )?;
        for (name, offset, ty) in members {
            let n = cstr(name);
            let (member, _array);
            match ty {
                MemberType::Scalar(base) => member = **base,
                MemberType::Array(base, dims) => {
                    // SAFETY: `dims` holds `dims.len()` extents; one n-D array type.
                    let a = unsafe { H5Tarray_create2(**base, dims.len() as u32, dims.as_ptr()) };
                    _array = check_id(a, "array type", H5Tclose)?;
                    member = _array.raw();
                }
            }
            // SAFETY: `t` is a compound type; `member` a valid type that fits at `offset`.
            check(
                unsafe { H5Tinsert(t.raw(), n.as_ptr(), *offset, member) },
                &format!("compound member {name}"),
            )?;
        }
        Ok(t)
    })
}

/// Filters and chunking of a table.
pub(crate) struct TableOptions {
    pub chunk_rows: usize,
    /// deflate level, 0 for none (then no shuffle either).
    pub deflate: u8,
}

/// Creates an empty, unlimited 1-D dataset of `ty` rows named `name` in `loc`.
pub(crate) fn create_table(loc: &Id, name: &str, ty: &Id, opts: &TableOptions) -> H5Result<Id> {
    let n = cstr(name);
    locked(|| {
        let (dims, max) = ([0 as hsize_t], [H5S_UNLIMITED]);
        // SAFETY: rank 1 with one extent and one maximum.
        let space = check_id(
            unsafe { H5Screate_simple(1, dims.as_ptr(), max.as_ptr()) },
            "table dataspace",
            H5Sclose,
        )?;
        // SAFETY: property lists, each closed by its Id.
        let dcpl = check_id(
            unsafe { H5Pcreate(*H5P_CLS_DATASET_CREATE) },
            "table properties",
            H5Pclose,
        )?;
        let chunk = [opts.chunk_rows as hsize_t];
        // SAFETY: rank 1 chunk of `chunk_rows` rows.
        check(
            unsafe { H5Pset_chunk(dcpl.raw(), 1, chunk.as_ptr()) },
            "chunking",
        )?;
        if opts.deflate > 0 {
            // SAFETY: a dataset-creation property list.
            check(unsafe { H5Pset_shuffle(dcpl.raw()) }, "shuffle filter")?;
            // SAFETY: as above; level 1..=9.
            check(
                unsafe { H5Pset_deflate(dcpl.raw(), u32::from(opts.deflate)) },
                "deflate filter",
            )?;
        }
        let dapl = check_id(
            // SAFETY: as above.
            unsafe { H5Pcreate(*H5P_CLS_DATASET_ACCESS) },
            "table access properties",
            H5Pclose,
        )?;
        // No chunk cache: chunks are written whole and encoded (`write_chunk`),
        // never read back.
        // SAFETY: a dataset-access property list.
        check(
            unsafe { H5Pset_chunk_cache(dapl.raw(), 0, 0, 1.0) },
            "chunk cache",
        )?;
        // SAFETY: open location, valid name, type, space and property lists.
        let id = unsafe {
            H5Dcreate2(
                loc.raw(),
                n.as_ptr(),
                ty.raw(),
                space.raw(),
                H5P_DEFAULT,
                dcpl.raw(),
                dapl.raw(),
            )
        };
        check_id(id, &format!("creating table {name}"), H5Dclose)
    })
}

/// Writes one encoded chunk (`mask` says which filters were skipped, as
/// `H5Dwrite_chunk` takes it) at row `first` of the 1-D chunked dataset
/// `ds`, after extending the dataset to `rows` rows.
pub(crate) fn write_chunk(ds: &Id, first: u64, rows: u64, mask: u32, bytes: &[u8]) -> H5Result<()> {
    locked(|| {
        let size = [rows];
        // SAFETY: `ds` is an open chunked dataset of rank 1.
        check(
            unsafe { H5Dset_extent(ds.raw(), size.as_ptr()) },
            "extending the table",
        )?;
        let offset = [first];
        // SAFETY: a rank-1 offset (a chunk's first row, inside the extent
        // just set) and `bytes.len()` bytes that outlive the call.
        check(
            unsafe {
                H5Dwrite_chunk(
                    ds.raw(),
                    H5P_DEFAULT,
                    mask,
                    offset.as_ptr(),
                    bytes.len(),
                    bytes.as_ptr().cast(),
                )
            },
            "writing a chunk",
        )
    })
}

/// Creates the flush log `name` in `loc`: an unlimited `uint64 (n, 2)`
/// array, one unfiltered chunk per row, allocated when it is extended.
///
/// It exists for what its allocation does. A table's last chunk, flushed
/// while partly filled, is written again elsewhere once it fills (its
/// compressed size changes) and its old place is freed. If that place is at
/// the end of the file, the file shrinks back and the new copy lands on it
/// before the next flush has recorded the move: a writer killed then leaves
/// an index pointing at bytes that changed ("filter returned failure" in
/// h5py, seen in the kill -9 test). A row of this log allocated right after
/// each flush keeps every flushed chunk off the end of the file, and with no
/// free-space reuse (`create_file`) its place is never written again.
pub(crate) fn create_flush_log(loc: &Id, name: &str) -> H5Result<Id> {
    let n = cstr(name);
    locked(|| {
        let (dims, max) = ([0 as hsize_t, 2], [H5S_UNLIMITED, 2]);
        // SAFETY: rank 2 with two extents and two maxima.
        let space = check_id(
            unsafe { H5Screate_simple(2, dims.as_ptr(), max.as_ptr()) },
            "flush log dataspace",
            H5Sclose,
        )?;
        // SAFETY: a property list, closed by its Id.
        let dcpl = check_id(
            unsafe { H5Pcreate(*H5P_CLS_DATASET_CREATE) },
            "flush log properties",
            H5Pclose,
        )?;
        let chunk = [1 as hsize_t, 2];
        // SAFETY: a rank-2 chunk; allocation when extended.
        check(
            unsafe { H5Pset_chunk(dcpl.raw(), 2, chunk.as_ptr()) },
            "chunking",
        )?;
        // SAFETY: as above.
        check(
            unsafe { H5Pset_alloc_time(dcpl.raw(), H5D_alloc_time_t::H5D_ALLOC_TIME_EARLY) },
            "allocation time",
        )?;
        // SAFETY: open location, valid name, type, space and property list.
        let id = unsafe {
            H5Dcreate2(
                loc.raw(),
                n.as_ptr(),
                *H5T_STD_U64LE,
                space.raw(),
                H5P_DEFAULT,
                dcpl.raw(),
                H5P_DEFAULT,
            )
        };
        check_id(id, &format!("creating {name}"), H5Dclose)
    })
}

/// Appends `row` as row `index` of the flush log `ds`.
pub(crate) fn append_flush_log(ds: &Id, index: u64, row: [u64; 2]) -> H5Result<()> {
    locked(|| {
        let size = [index + 1, 2];
        // SAFETY: `ds` is the rank-2 flush log.
        check(
            unsafe { H5Dset_extent(ds.raw(), size.as_ptr()) },
            "extending the flush log",
        )?;
        let file_space = check_id(
            // SAFETY: as above.
            unsafe { hdf5_sys::h5d::H5Dget_space(ds.raw()) },
            "flush log dataspace",
            H5Sclose,
        )?;
        let (start, count) = ([index, 0], [1 as hsize_t, 2]);
        // SAFETY: a selection of the row just added.
        check(
            unsafe {
                H5Sselect_hyperslab(
                    file_space.raw(),
                    H5S_SELECT_SET,
                    start.as_ptr(),
                    std::ptr::null(),
                    count.as_ptr(),
                    std::ptr::null(),
                )
            },
            "selecting the flush log row",
        )?;
        let mem_dims = [1 as hsize_t, 2];
        let mem_space = check_id(
            // SAFETY: rank 2, fixed size.
            unsafe { H5Screate_simple(2, mem_dims.as_ptr(), std::ptr::null()) },
            "memory dataspace",
            H5Sclose,
        )?;
        // SAFETY: `row` is two u64 (H5T_STD_U64LE here) and outlives the call.
        check(
            unsafe {
                H5Dwrite(
                    ds.raw(),
                    *H5T_STD_U64LE,
                    mem_space.raw(),
                    file_space.raw(),
                    H5P_DEFAULT,
                    row.as_ptr().cast(),
                )
            },
            "writing the flush log",
        )
    })
}

/// Removes attribute `name` of `obj` if it exists.
fn delete_attr(obj: &Id, name: &CString) -> H5Result<()> {
    // SAFETY: `obj` is open, `name` a valid C string.
    let exists = unsafe { H5Aexists(obj.raw(), name.as_ptr()) };
    if exists > 0 {
        // SAFETY: as above; the attribute exists.
        check(
            unsafe { H5Adelete(obj.raw(), name.as_ptr()) },
            "replacing an attribute",
        )?;
    }
    Ok(())
}

/// Writes attribute `name` (replacing it) with `count` values of `ty` at
/// `data`: a scalar for `None`, else a 1-D array of that many.
///
/// # Safety
/// `data` must point to `count.unwrap_or(1)` values of the layout of `ty`.
unsafe fn write_attr(
    obj: &Id,
    name: &str,
    ty: hid_t,
    count: Option<usize>,
    data: *const std::ffi::c_void,
) -> H5Result<()> {
    let n = cstr(name);
    locked(|| {
        delete_attr(obj, &n)?;
        let space = match count {
            // SAFETY: a scalar dataspace.
            None => unsafe { H5Screate(H5S_class_t::H5S_SCALAR) },
            Some(c) => {
                let dims = [c as hsize_t];
                // SAFETY: rank 1, fixed size.
                unsafe { H5Screate_simple(1, dims.as_ptr(), std::ptr::null()) }
            }
        };
        let space = check_id(space, "attribute dataspace", H5Sclose)?;
        // SAFETY: open object, valid name, type and space.
        let a = unsafe {
            H5Acreate2(
                obj.raw(),
                n.as_ptr(),
                ty,
                space.raw(),
                H5P_DEFAULT,
                H5P_DEFAULT,
            )
        };
        let a = check_id(a, &format!("attribute {name}"), H5Aclose)?;
        // SAFETY: the caller guarantees `data` holds what `ty` and `count` say.
        check(
            unsafe { H5Awrite(a.raw(), ty, data) },
            &format!("attribute {name}"),
        )
    })
}

/// A string attribute as PyTables writes one: fixed length, UTF-8,
/// NUL-terminated, scalar.
pub(crate) fn set_str(obj: &Id, name: &str, value: &str) -> H5Result<()> {
    let v = cstr(value);
    locked(|| {
        // SAFETY: copying a predefined type.
        let ty = check_id(unsafe { H5Tcopy(*H5T_C_S1) }, "string type", H5Tclose)?;
        // SAFETY: a string type; its size is the text's (at least 1).
        check(
            unsafe { H5Tset_size(ty.raw(), value.len().max(1)) },
            "string type",
        )?;
        // SAFETY: as above.
        check(
            unsafe { H5Tset_strpad(ty.raw(), H5T_str_t::H5T_STR_NULLTERM) },
            "string type",
        )?;
        // SAFETY: as above.
        check(
            unsafe { H5Tset_cset(ty.raw(), H5T_cset_t::H5T_CSET_UTF8) },
            "string type",
        )?;
        // SAFETY: `v` holds `value.len()` bytes and a NUL, at least the type's size.
        unsafe { write_attr(obj, name, ty.raw(), None, v.as_ptr().cast()) }
    })
}

/// A scalar attribute of a plain number type `ty` (one of the `H5T_*LE`).
pub(crate) fn set_scalar<T: Copy>(
    obj: &Id,
    name: &str,
    ty: &'static hid_t,
    value: T,
) -> H5Result<()> {
    // SAFETY: `value` is one `T`, and the callers pair `T` with its type:
    // u64/H5T_STD_U64LE, i64/I64LE, u32/U32LE, f32/F32LE, f64/F64LE.
    locked(|| unsafe { write_attr(obj, name, *ty, None, (&raw const value).cast()) })
}

/// A 1-D `int64` array attribute.
pub(crate) fn set_i64_array(obj: &Id, name: &str, values: &[i64]) -> H5Result<()> {
    // SAFETY: `values` holds `values.len()` i64, the layout of H5T_STD_I64LE here.
    locked(|| unsafe {
        write_attr(
            obj,
            name,
            *H5T_STD_I64LE,
            Some(values.len()),
            values.as_ptr().cast(),
        )
    })
}
