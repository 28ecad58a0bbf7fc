// Thin RAII layer over the HDF5 C API: files, groups, attributes and whole-dataset reads/writes, every call checked.
// A call the operating system refused (disk full, quota, I/O error) is reported as such, naming the file: WriteError
// (exit 4) when writing, flushing, closing or creating, InputError when reading; any other HDF5 failure is an
// InternalError naming the call.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace qwen3::h5 {

// Owns one HDF5 identifier and closes it with the right H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes it, ignoring a failure (a destructor cannot report one): use close() where the answer matters.
  void reset();
  hid_t release();  // gives up ownership without closing


 private:
  hid_t id_ = H5I_INVALID_HID;
};

// A write, flush, close or create that the operating system refused: "cannot write 'F': no space left on device".
struct WriteError : OutputError {
  WriteError(const std::string& file, int error_number);
  std::string file;       // as HDF5 opened it
  int error_number;       // errno
  std::string reason() const;  // strerror, first letter lower case: "no space left on device"
};
std::string system_reason(int error_number);  // strerror(error_number) as reason() gives it

// Closes a handle now and reports what its destructor cannot: a file is flushed first, and a dataset's close writes
// the chunks HDF5 still caches, so a full disk answers here (WriteError naming the file). `what` names the object.
// The handle is closed even when this throws.
void close(Handle& handle, const std::string& what);

// Silences HDF5's own error stack printing; our checks report instead. Call once per process.
void quiet_errors();

// Opens an existing file read-only. Throws InputError naming the path if missing or not HDF5.
Handle open_read(const std::string& path, const std::string& what);
// Opens an existing file read-write (for appending to a results file we created).
Handle open_rw(const std::string& path);
// Creates (truncates) a file. Throws OutputError naming the path if it cannot (WriteError when the disk is full),
// saying so when another process holds HDF5's lock on it.
Handle create(const std::string& path);
void flush(const Handle& file);  // WriteError naming the file when the disk refuses

bool exists(hid_t loc, const std::string& path);          // link exists (intermediate groups checked)
bool has_attr(hid_t obj, const std::string& name);
Handle open_group(hid_t loc, const std::string& path);
Handle ensure_group(hid_t loc, const std::string& path);  // creates intermediate groups
std::vector<std::string> list(hid_t loc, const std::string& group);  // child names, sorted

// Attributes (scalars). Readers throw InputError naming the attribute when it is missing or of the wrong kind.
// Strings are written variable-length UTF-8 (h5py reads them as str) and read in either form (older files hold
// fixed-length ones); a number written again over one of its kind is rewritten in place.
void write_attr(hid_t obj, const std::string& name, const std::string& value);
void write_attr(hid_t obj, const std::string& name, std::int64_t value);
void write_attr(hid_t obj, const std::string& name, double value);
void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values);
std::string read_attr_string(hid_t obj, const std::string& name);
std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name);  // a 1-D string attribute
std::int64_t read_attr_int(hid_t obj, const std::string& name);
double read_attr_double(hid_t obj, const std::string& name);

// Dataset shape without reading it.
std::vector<std::int64_t> shape(hid_t loc, const std::string& path);

// Whole-dataset reads, converted by HDF5 to the requested element type.
std::vector<float> read_f32(hid_t loc, const std::string& path, std::vector<std::int64_t>* shape_out = nullptr);
std::vector<double> read_f64(hid_t loc, const std::string& path, std::vector<std::int64_t>* shape_out = nullptr);
std::vector<std::int32_t> read_i32(hid_t loc, const std::string& path,
                                   std::vector<std::int64_t>* shape_out = nullptr);
// Rows [row0, row0+rows) of a 2-D int32 dataset [N, L] (a hyperslab, so big buckets are never read whole).
std::vector<std::int32_t> read_i32_rows(hid_t loc, const std::string& path, std::int64_t row0, std::int64_t rows);

// Whole-dataset writes (creates intermediate groups). Optional chunked + deflate for large integer data.
void write_f32(hid_t loc, const std::string& path, const std::vector<float>& data, const std::vector<std::int64_t>& shape);
void write_f64(hid_t loc, const std::string& path, const std::vector<double>& data, const std::vector<std::int64_t>& shape);
void write_i64(hid_t loc, const std::string& path, const std::vector<std::int64_t>& data,
               const std::vector<std::int64_t>& shape);
// Writes all of an existing dataset again (its shape unchanged: data holds exactly its elements).
void rewrite_i64(hid_t loc, const std::string& path, const std::vector<std::int64_t>& data);
void write_i32(hid_t loc, const std::string& path, const std::vector<std::int32_t>& data,
               const std::vector<std::int64_t>& shape, std::int64_t chunk_rows = 0);
void write_string(hid_t loc, const std::string& path, const std::string& value);
// A scalar string dataset (write_string's fixed-length one, or variable-length); InputError naming the path when
// absent or not a string.
std::string read_string(hid_t loc, const std::string& path);

// Row-streamed 2-D int32 writes, so a big [N, L] dataset never has to sit in memory whole:
// create it empty (chunked by chunk_rows rows, deflate-compressed), then fill it block by block.
void create_i32_2d(hid_t loc, const std::string& path, std::int64_t rows, std::int64_t cols, std::int64_t chunk_rows);
// Writes rows [row0, row0+rows) of a 2-D int32 dataset from data [rows, cols] (the counterpart of read_i32_rows).
void write_i32_rows(hid_t loc, const std::string& path, std::int64_t row0, const std::vector<std::int32_t>& data,
                    std::int64_t rows);

// An extendible 1-D float64 dataset for per-step series, appended one value at a time.
class Series {
 public:
  Series() = default;
  Series(hid_t loc, const std::string& path);  // creates it, empty
  void append(double value);
  std::int64_t size() const { return size_; }

 private:
  Handle dset_;
  std::int64_t size_ = 0;
};

// An extendible 2-D float64 dataset [n, cols] that grows by blocks of rows (e.g. a memory trace flushed as it goes).
class Rows {
 public:
  Rows() = default;
  Rows(hid_t loc, const std::string& path, std::int64_t cols);  // creates it, empty
  void append(const std::vector<double>& rows);  // whole rows: a multiple of cols values
  std::int64_t size() const { return size_; }
  hid_t get() const { return dset_.get(); }

 private:
  Handle dset_;
  std::int64_t cols_ = 0, size_ = 0;
};

std::string library_version();  // "1.10.8"

}  // namespace qwen3::h5
