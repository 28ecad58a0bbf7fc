// Implementation of the checked HDF5 layer (see h5.h).
#include "io/h5.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core/error.h"

namespace qwen3::h5 {
namespace {

// HDF5 1.10 frees a file or dataset whose close failed (its flush hit a full disk) yet keeps its identifier; the
// library's own shutdown at exit then closes it a second time and crashes in H5F__close_cb (HDF5 issues #2257 and
// #2291, fixed in 1.14; Debian 12 ships 1.10.8). So the shutdown is ours: registered before the library starts, and
// skipped once any close has failed, when the process is ending with that error anyway.
std::atomic<bool> g_close_failed{false};
void shutdown_library() {
  if (!g_close_failed.load()) H5close();
}
[[maybe_unused]] const bool g_shutdown_registered = [] {
  return H5dont_atexit() >= 0 && std::atexit(shutdown_library) == 0;
}();

// What went wrong under a failed HDF5 call, as far as the operating system is concerned.
struct Failure {
  std::string what;        // our name for the call ("write rows buckets/len_8/tokens")
  std::string file;        // the file HDF5 was working on, when known
  int error_number = 0;    // errno reported by HDF5's file driver (0: not an operating-system failure)
  bool reading = false;    // the driver was reading (else writing, seeking, truncating, opening, closing)
  bool locked = false;     // HDF5's file lock was refused: another process has the file open
};

// The file driver's messages carry "errno = N" and, for reads and writes, "filename = '...'" (opening: "name = '...'").
herr_t scan_error(unsigned, const H5E_error2_t* e, void* data) {
  auto& f = *static_cast<Failure*>(data);
  if (f.error_number != 0 || e->desc == nullptr) return 0;
  const char* at = std::strstr(e->desc, "errno = ");
  if (at == nullptr) return 0;
  f.error_number = static_cast<int>(std::strtol(at + 8, nullptr, 10));
  f.reading = e->min_num == H5E_READERROR || std::strstr(e->desc, "read failed") != nullptr;
  f.locked = std::strstr(e->desc, "unable to lock file") != nullptr;
  for (const char* key : {"filename = '", "name = '"}) {
    const char* name = std::strstr(e->desc, key);
    if (name == nullptr) continue;
    name += std::strlen(key);
    const char* end = std::strchr(name, '\'');
    if (end != nullptr && f.file.empty()) f.file.assign(name, end);
  }
  return 0;
}

std::string file_name(hid_t obj);

// A failed call's picture: HDF5's error stack first; else errno as the call left it, when the stack says a write or
// flush failed and errno is one the operating system gives for storage (HDF5 does not always put it in the message).
// Must run before any other HDF5 API call, each of which clears the error stack. obj (any object of the file, or
// H5I_INVALID_HID) names the file when `file` is empty.
Failure diagnose(const std::string& what, const std::string& file, int errno_after_call,
                 hid_t obj = H5I_INVALID_HID) {
  Failure f;
  f.what = what;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, scan_error, &f);
  if (f.error_number == 0) {
    bool io = false;
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_DOWNWARD,
        [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
          if (e->min_num == H5E_WRITEERROR || e->min_num == H5E_CANTFLUSH || e->min_num == H5E_SEEKERROR)
            *static_cast<bool*>(data) = true;
          return 0;
        },
        &io);
    const int e = errno_after_call;
    if (io && (e == ENOSPC || e == EDQUOT || e == EIO || e == EFBIG || e == EROFS)) f.error_number = e;
  }
  H5Eclear2(H5E_DEFAULT);
  if (!file.empty()) f.file = file;  // the caller's name for it, when it has one
  else if (f.file.empty()) f.file = file_name(obj);
  return f;
}

// The file an object lives in, as HDF5 opened it ("" when there is none).
std::string file_name(hid_t obj) {
  if (obj < 0) return "";
  const ssize_t n = H5Fget_name(obj, nullptr, 0);
  if (n <= 0) return "";
  std::string name(static_cast<std::size_t>(n), '\0');
  if (H5Fget_name(obj, name.data(), name.size() + 1) < 0) return "";
  return name;
}

[[noreturn]] void throw_failure(const Failure& f) {
  const std::string file = f.file.empty() ? std::string("an HDF5 file") : f.file;
  if (f.error_number != 0 && f.reading)
    throw InputError("cannot read '" + file + "': " + system_reason(f.error_number));
  if (f.error_number != 0) throw WriteError(file, f.error_number);
  throw InternalError("HDF5 call failed: " + f.what);
}

// Any HDF5 failure: the operating system's refusal (disk full, quota, I/O error) as WriteError (exit 4) or, when
// reading, InputError, naming the file; anything else is one we did not anticipate: name the call and the object.
// obj (any object of the file) names the file when HDF5's messages do not.
void check(herr_t rc, const std::string& what, hid_t obj = H5I_INVALID_HID) {
  const int errno_after_call = errno;
  if (rc < 0) throw_failure(diagnose(what, "", errno_after_call, obj));
}
hid_t check_id(hid_t id, const std::string& what, hid_t obj = H5I_INVALID_HID) {
  const int errno_after_call = errno;
  if (id < 0) throw_failure(diagnose(what, "", errno_after_call, obj));
  return id;
}

// Closes an identifier with the right H5*close; a failed close is remembered (see shutdown_library).
herr_t close_id(hid_t id) {
  herr_t rc = 0;
  switch (H5Iget_type(id)) {
    case H5I_FILE: rc = H5Fclose(id); break;
    case H5I_GROUP: rc = H5Gclose(id); break;
    case H5I_DATASET: rc = H5Dclose(id); break;
    case H5I_ATTR: rc = H5Aclose(id); break;
    case H5I_DATASPACE: rc = H5Sclose(id); break;
    case H5I_DATATYPE: rc = H5Tclose(id); break;
    case H5I_GENPROP_LST: rc = H5Pclose(id); break;
    default: break;
  }
  if (rc < 0) g_close_failed.store(true);
  return rc;
}

std::vector<hsize_t> to_hsize(const std::vector<std::int64_t>& s) { return {s.begin(), s.end()}; }

std::int64_t element_count(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

template <typename T>
std::vector<T> read_all(hid_t loc, const std::string& path, hid_t mem_type, std::vector<std::int64_t>* shape_out) {
  if (!exists(loc, path)) throw InputError("missing dataset '" + path + "'");
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path));
  auto s = shape(loc, path);
  std::vector<T> out(static_cast<std::size_t>(element_count(s)));
  if (!out.empty())
    check(H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), "read dataset " + path);
  if (shape_out) *shape_out = s;
  return out;
}

template <typename T>
void write_all(hid_t loc, const std::string& path, hid_t file_type, hid_t mem_type, const T* data,
               const std::vector<std::int64_t>& s, std::int64_t chunk_rows = 0) {
  if (element_count(s) < 0) throw InternalError("negative shape for " + path);
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) ensure_group(loc, path.substr(0, slash));
  auto dims = to_hsize(s);
  Handle space(check_id(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "dataspace " + path));
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "dcpl"));
  if (chunk_rows > 0 && !dims.empty() && dims[0] > 0) {
    auto chunk = dims;
    chunk[0] = std::min<hsize_t>(dims[0], static_cast<hsize_t>(chunk_rows));
    check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), "chunk " + path);
    check(H5Pset_deflate(dcpl.get(), 1), "deflate " + path);
  }
  Handle d(check_id(H5Dcreate2(loc, path.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                    "create dataset " + path, loc));
  if (element_count(s) > 0) check(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write " + path, loc);
  close(d, path);  // writes what HDF5 still caches: a full disk answers here
}

Handle open_attr(hid_t obj, const std::string& name) {
  if (!has_attr(obj, name)) throw InputError("missing attribute '" + name + "'");
  return Handle(check_id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute " + name));
}

void replace_attr(hid_t obj, const std::string& name) {
  if (has_attr(obj, name)) check(H5Adelete(obj, name.c_str()), "delete attribute " + name);
}

// Strings are stored variable-length UTF-8: h5py reads such attributes as str (fixed-length ones come back as bytes).
Handle utf8_vlen_type() {
  Handle type(check_id(H5Tcopy(H5T_C_S1), "string type"));
  check(H5Tset_size(type.get(), H5T_VARIABLE), "variable-length string");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), "string cset");
  return type;
}

// Rewrites an existing scalar attribute of the same type class in place (values updated every step, e.g. timings,
// then take no new space in the object header); false when there is none to rewrite.
bool overwrite_scalar(hid_t obj, const std::string& name, H5T_class_t cls, hid_t mem_type, const void* value) {
  if (!has_attr(obj, name)) return false;
  Handle a(check_id(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute " + name));
  Handle ftype(check_id(H5Aget_type(a.get()), "attribute type"));
  Handle space(check_id(H5Aget_space(a.get()), "attribute space"));
  if (H5Tget_class(ftype.get()) != cls || H5Sget_simple_extent_type(space.get()) != H5S_SCALAR) return false;
  check(H5Awrite(a.get(), mem_type, value), "write attribute " + name, obj);
  return true;
}

// The strings of a string attribute or dataset's elements, fixed-length (older files) or variable-length.
// read(mem_type, buffer) reads every element into buffer.
std::vector<std::string> read_strings(hid_t file_type, std::size_t count, const std::string& what,
                                      const std::function<herr_t(hid_t, void*)>& read) {
  if (H5Tget_class(file_type) != H5T_STRING) throw InputError(what + " is not a string");
  std::vector<std::string> out;
  if (H5Tis_variable_str(file_type) > 0) {
    Handle mtype(check_id(H5Tcopy(H5T_C_S1), "string type"));
    check(H5Tset_size(mtype.get(), H5T_VARIABLE), "vlen");
    check(H5Tset_cset(mtype.get(), H5Tget_cset(file_type)), "string cset");
    std::vector<char*> ptrs(count, nullptr);
    if (count > 0) check(read(mtype.get(), ptrs.data()), "read " + what);
    for (char* p : ptrs) {
      out.emplace_back(p ? p : "");
      H5free_memory(p);
    }
    return out;
  }
  const std::size_t size = H5Tget_size(file_type);
  std::string buf(size * count, '\0');
  Handle mtype(check_id(H5Tcopy(H5T_C_S1), "string type"));
  check(H5Tset_size(mtype.get(), size), "string size");
  check(H5Tset_cset(mtype.get(), H5Tget_cset(file_type)), "string cset");
  // The file's padding, so that no conversion happens: NULLPAD to NULLTERM would put a null in the last byte.
  check(H5Tset_strpad(mtype.get(), H5Tget_strpad(file_type)), "string padding");
  if (count > 0) check(read(mtype.get(), buf.data()), "read " + what);
  for (std::size_t i = 0; i < count; ++i) {
    std::string s = buf.substr(i * size, size);
    out.push_back(s.substr(0, s.find('\0')));
  }
  return out;
}

// Elements in an attribute's or a dataset's dataspace.
std::size_t space_points(hid_t space) {
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  check(static_cast<herr_t>(n < 0 ? -1 : 0), "dataspace size");
  return static_cast<std::size_t>(n);
}

}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Handle::reset() {
  if (id_ < 0) return;
  const hid_t id = release();
  if (close_id(id) < 0) H5Eclear2(H5E_DEFAULT);  // a destructor cannot report it; close() does
}

hid_t Handle::release() {
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  return id;
}

std::string system_reason(int error_number) {
  std::string reason = std::strerror(error_number);
  if (!reason.empty() && reason[0] >= 'A' && reason[0] <= 'Z' && (reason.size() < 2 || !std::isupper(reason[1])))
    reason[0] = static_cast<char>(reason[0] - 'A' + 'a');
  return reason;
}

WriteError::WriteError(const std::string& file, int error_number)
    : OutputError("cannot write '" + file + "': " + system_reason(error_number)), file(file),
      error_number(error_number) {}

std::string WriteError::reason() const { return system_reason(error_number); }

void close(Handle& handle, const std::string& what) {
  if (!handle.valid()) return;
  const int errno_before = errno;
  const std::string file = file_name(handle.get());
  std::optional<Failure> failure;
  // A file closes for real only when its last object does: flush it now, so the disk's answer comes back here.
  unsigned intent = 0;
  if (H5Iget_type(handle.get()) == H5I_FILE && H5Fget_intent(handle.get(), &intent) >= 0 && (intent & H5F_ACC_RDWR) &&
      H5Fflush(handle.get(), H5F_SCOPE_LOCAL) < 0)
    failure = diagnose("flush " + what, file, errno);
  if (close_id(handle.release()) < 0 && !failure) failure = diagnose("close " + what, file, errno);
  errno = errno_before;
  if (failure) throw_failure(*failure);
}

void quiet_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle open_read(const std::string& path, const std::string& what) {
  quiet_errors();
  if (!std::filesystem::exists(path)) throw InputError(what + " '" + path + "' does not exist");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw InputError(what + " '" + path + "' is not an HDF5 file (corrupt or wrong file)");
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(what + " '" + path + "' cannot be opened (corrupt or truncated HDF5 file)");
  return Handle(f);
}

Handle open_rw(const std::string& path) {
  quiet_errors();
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) {
    const Failure why = diagnose("open " + path, path, errno);
    throw OutputError("cannot open '" + path + "' for writing" +
                      (why.locked ? ": another process has it open (HDF5's file lock is taken)"
                       : why.error_number != 0 ? ": " + system_reason(why.error_number)
                                               : ""));
  }
  return Handle(f);
}

Handle create(const std::string& path) {
  quiet_errors();
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) {
    const Failure why = diagnose("create " + path, path, errno);
    if (why.locked) throw OutputError("cannot create '" + path + "': another process has it open (HDF5's file lock is taken)");
    const int e = why.error_number;
    if (e == ENOSPC || e == EDQUOT || e == EIO || e == EFBIG) {  // HDF5 made the file, then could not write it
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
    const bool folder = e == ENOENT || e == ENOTDIR || e == EACCES || e == EROFS;
    if (e != 0)
      throw OutputError("cannot create '" + path + "': " + system_reason(e) +
                        (folder ? " (is the folder there and writable?)" : ""));
    throw OutputError("cannot create '" + path + "' (is the folder there and writable?)");
  }
  return Handle(f);
}

void flush(const Handle& file) { check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "flush", file.get()); }

bool exists(hid_t loc, const std::string& path) {
  // H5Lexists fails (rather than returning false) when an intermediate group is missing: walk the path.
  std::string prefix;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) {
      prefix += (prefix.empty() ? "" : "/") + part;
      if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return !prefix.empty();
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

Handle open_group(hid_t loc, const std::string& path) {
  if (!exists(loc, path)) throw InputError("missing group '" + path + "'");
  return Handle(check_id(H5Gopen2(loc, path.c_str(), H5P_DEFAULT), "open group " + path));
}

Handle ensure_group(hid_t loc, const std::string& path) {
  std::string prefix;
  std::size_t start = 0;
  while (true) {
    auto slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) {
      prefix += (prefix.empty() ? "" : "/") + part;
      if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) {
        Handle g(check_id(H5Gcreate2(loc, prefix.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group " + prefix, loc));
      }
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return Handle(check_id(H5Gopen2(loc, path.c_str(), H5P_DEFAULT), "open group " + path));
}

std::vector<std::string> list(hid_t loc, const std::string& group) {
  Handle g = open_group(loc, group);
  H5G_info_t info;
  check(H5Gget_info(g.get(), &info), "group info " + group);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t n = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    check(static_cast<herr_t>(n < 0 ? -1 : 0), "link name in " + group);
    std::string s(static_cast<std::size_t>(n), '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size() + 1, H5P_DEFAULT);
    names.push_back(s);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void write_attr(hid_t obj, const std::string& name, const std::string& value) {
  replace_attr(obj, name);
  Handle type = utf8_vlen_type();
  Handle space(check_id(H5Screate(H5S_SCALAR), "scalar space"));
  Handle a(check_id(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), "create attribute " + name, obj));
  const char* p = value.c_str();
  check(H5Awrite(a.get(), type.get(), &p), "write attribute " + name, obj);
}

void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values) {
  replace_attr(obj, name);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  Handle type = utf8_vlen_type();
  hsize_t n = values.size();
  Handle space(check_id(H5Screate_simple(1, &n, nullptr), "space"));
  Handle a(check_id(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), "create attribute " + name, obj));
  if (n > 0) check(H5Awrite(a.get(), type.get(), ptrs.data()), "write attribute " + name, obj);
}

void write_attr(hid_t obj, const std::string& name, std::int64_t value) {
  if (overwrite_scalar(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, &value)) return;
  replace_attr(obj, name);
  Handle space(check_id(H5Screate(H5S_SCALAR), "scalar space"));
  Handle a(check_id(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), "create attribute " + name, obj));
  check(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), "write attribute " + name, obj);
}

void write_attr(hid_t obj, const std::string& name, double value) {
  if (overwrite_scalar(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, &value)) return;
  replace_attr(obj, name);
  Handle space(check_id(H5Screate(H5S_SCALAR), "scalar space"));
  Handle a(check_id(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), "create attribute " + name, obj));
  check(H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &value), "write attribute " + name, obj);
}

std::string read_attr_string(hid_t obj, const std::string& name) {
  Handle a = open_attr(obj, name);
  Handle ftype(check_id(H5Aget_type(a.get()), "attribute type"));
  Handle space(check_id(H5Aget_space(a.get()), "attribute space"));
  if (H5Tget_class(ftype.get()) != H5T_STRING) throw InputError("attribute '" + name + "' is not a string");
  if (space_points(space.get()) != 1) throw InputError("attribute '" + name + "' is not a single string");
  return read_strings(ftype.get(), 1, "attribute '" + name + "'",
                      [&](hid_t mtype, void* buf) { return H5Aread(a.get(), mtype, buf); })[0];
}

std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name) {
  Handle a = open_attr(obj, name);
  Handle ftype(check_id(H5Aget_type(a.get()), "attribute type"));
  Handle space(check_id(H5Aget_space(a.get()), "attribute space"));
  return read_strings(ftype.get(), space_points(space.get()), "attribute '" + name + "'",
                      [&](hid_t mtype, void* buf) { return H5Aread(a.get(), mtype, buf); });
}

std::int64_t read_attr_int(hid_t obj, const std::string& name) {
  Handle a = open_attr(obj, name);
  Handle ftype(check_id(H5Aget_type(a.get()), "attribute type"));
  auto cls = H5Tget_class(ftype.get());
  if (cls == H5T_INTEGER) {
    std::int64_t v = 0;
    check(H5Aread(a.get(), H5T_NATIVE_INT64, &v), "read attribute " + name);
    return v;
  }
  if (cls == H5T_ENUM) {  // h5py stores numpy booleans as an enum over int8 (FALSE = 0, TRUE = 1)
    Handle native(check_id(H5Tget_native_type(ftype.get(), H5T_DIR_ASCEND), "native enum type"));
    const std::size_t size = H5Tget_size(native.get());
    if (size == 1 || size == 2 || size == 4 || size == 8) {
      std::int64_t buf = 0;
      check(H5Aread(a.get(), native.get(), &buf), "read attribute " + name);
      if (size == 1) return static_cast<std::int8_t>(buf & 0xff);
      if (size == 2) return static_cast<std::int16_t>(buf & 0xffff);
      if (size == 4) return static_cast<std::int32_t>(buf & 0xffffffff);
      return buf;
    }
  }
  if (cls == H5T_FLOAT) {  // Python writers sometimes store integral values as floats; accept exact ones.
    double d = 0;
    check(H5Aread(a.get(), H5T_NATIVE_DOUBLE, &d), "read attribute " + name);
    if (d == static_cast<double>(static_cast<std::int64_t>(d))) return static_cast<std::int64_t>(d);
  }
  throw InputError("attribute '" + name + "' is not an integer");
}

double read_attr_double(hid_t obj, const std::string& name) {
  Handle a = open_attr(obj, name);
  Handle ftype(check_id(H5Aget_type(a.get()), "attribute type"));
  auto cls = H5Tget_class(ftype.get());
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) throw InputError("attribute '" + name + "' is not a number");
  double v = 0;
  check(H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v), "read attribute " + name);
  return v;
}

std::vector<std::int64_t> shape(hid_t loc, const std::string& path) {
  if (!exists(loc, path)) throw InputError("missing dataset '" + path + "'");
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path));
  Handle space(check_id(H5Dget_space(d.get()), "dataspace " + path));
  int rank = H5Sget_simple_extent_ndims(space.get());
  check(rank, "rank of " + path);
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return {dims.begin(), dims.end()};
}

std::vector<float> read_f32(hid_t loc, const std::string& path, std::vector<std::int64_t>* s) {
  return read_all<float>(loc, path, H5T_NATIVE_FLOAT, s);
}
std::vector<double> read_f64(hid_t loc, const std::string& path, std::vector<std::int64_t>* s) {
  return read_all<double>(loc, path, H5T_NATIVE_DOUBLE, s);
}
std::vector<std::int32_t> read_i32(hid_t loc, const std::string& path, std::vector<std::int64_t>* s) {
  return read_all<std::int32_t>(loc, path, H5T_NATIVE_INT32, s);
}

std::vector<std::int32_t> read_i32_rows(hid_t loc, const std::string& path, std::int64_t row0, std::int64_t rows) {
  auto s = shape(loc, path);
  if (s.size() != 2) throw InputError("dataset '" + path + "' is not 2-D");
  if (row0 < 0 || rows < 0 || row0 + rows > s[0]) throw InternalError("row range out of bounds in " + path);
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path));
  Handle fspace(check_id(H5Dget_space(d.get()), "dataspace " + path));
  hsize_t start[2] = {static_cast<hsize_t>(row0), 0}, count[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(s[1])};
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "select rows " + path);
  Handle mspace(check_id(H5Screate_simple(2, count, nullptr), "memspace"));
  std::vector<std::int32_t> out(static_cast<std::size_t>(rows * s[1]));
  if (!out.empty())
    check(H5Dread(d.get(), H5T_NATIVE_INT32, mspace.get(), fspace.get(), H5P_DEFAULT, out.data()), "read rows " + path);
  return out;
}

void write_f32(hid_t loc, const std::string& path, const std::vector<float>& data, const std::vector<std::int64_t>& s) {
  write_all(loc, path, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data.data(), s);
}
void write_f64(hid_t loc, const std::string& path, const std::vector<double>& data, const std::vector<std::int64_t>& s) {
  write_all(loc, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data.data(), s);
}
void write_i64(hid_t loc, const std::string& path, const std::vector<std::int64_t>& data, const std::vector<std::int64_t>& s) {
  write_all(loc, path, H5T_STD_I64LE, H5T_NATIVE_INT64, data.data(), s);
}
void write_i32(hid_t loc, const std::string& path, const std::vector<std::int32_t>& data,
               const std::vector<std::int64_t>& s, std::int64_t chunk_rows) {
  write_all(loc, path, H5T_STD_I32LE, H5T_NATIVE_INT32, data.data(), s, chunk_rows);
}

void rewrite_i64(hid_t loc, const std::string& path, const std::vector<std::int64_t>& data) {
  const auto s = shape(loc, path);
  if (element_count(s) != static_cast<std::int64_t>(data.size())) throw InternalError("size mismatch rewriting " + path);
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path));
  if (!data.empty())
    check(H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), "write " + path, loc);
  close(d, path);
}

void write_string(hid_t loc, const std::string& path, const std::string& value) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) ensure_group(loc, path.substr(0, slash));
  Handle type(check_id(H5Tcopy(H5T_C_S1), "string type"));
  check(H5Tset_size(type.get(), std::max<std::size_t>(1, value.size())), "string size");
  Handle space(check_id(H5Screate(H5S_SCALAR), "scalar space"));
  Handle d(check_id(H5Dcreate2(loc, path.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "create dataset " + path, loc));
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  check(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, padded.data()), "write " + path, loc);
  close(d, path);
}

std::string read_string(hid_t loc, const std::string& path) {
  if (!exists(loc, path)) throw InputError("dataset '" + path + "' is missing");
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open " + path));
  Handle ftype(check_id(H5Dget_type(d.get()), "dataset type"));
  Handle space(check_id(H5Dget_space(d.get()), "dataspace " + path));
  if (H5Tget_class(ftype.get()) != H5T_STRING || space_points(space.get()) != 1)
    throw InputError("dataset '" + path + "' is not a string");
  return read_strings(ftype.get(), 1, "dataset '" + path + "'",
                      [&](hid_t mtype, void* buf) { return H5Dread(d.get(), mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf); })[0];
}

void create_i32_2d(hid_t loc, const std::string& path, std::int64_t rows, std::int64_t cols, std::int64_t chunk_rows) {
  if (rows < 0 || cols <= 0 || chunk_rows <= 0) throw InternalError("bad shape or chunking for " + path);
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) ensure_group(loc, path.substr(0, slash));
  hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
  Handle space(check_id(H5Screate_simple(2, dims, nullptr), "dataspace " + path));
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "dcpl"));
  if (rows > 0) {
    hsize_t chunk[2] = {std::min<hsize_t>(dims[0], static_cast<hsize_t>(chunk_rows)), dims[1]};
    check(H5Pset_chunk(dcpl.get(), 2, chunk), "chunk " + path);
    check(H5Pset_deflate(dcpl.get(), 1), "deflate " + path);
  }
  Handle d(check_id(H5Dcreate2(loc, path.c_str(), H5T_STD_I32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                    "create dataset " + path, loc));
  close(d, path);
}

void write_i32_rows(hid_t loc, const std::string& path, std::int64_t row0, const std::vector<std::int32_t>& data,
                    std::int64_t rows) {
  auto s = shape(loc, path);
  if (s.size() != 2) throw InternalError("dataset '" + path + "' is not 2-D");
  if (row0 < 0 || rows < 0 || row0 + rows > s[0]) throw InternalError("row range out of bounds in " + path);
  if (static_cast<std::int64_t>(data.size()) != rows * s[1]) throw InternalError("row data size mismatch for " + path);
  if (rows == 0) return;
  Handle d(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path));
  Handle fspace(check_id(H5Dget_space(d.get()), "dataspace " + path));
  hsize_t start[2] = {static_cast<hsize_t>(row0), 0}, count[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(s[1])};
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "select rows " + path);
  Handle mspace(check_id(H5Screate_simple(2, count, nullptr), "memspace"));
  check(H5Dwrite(d.get(), H5T_NATIVE_INT32, mspace.get(), fspace.get(), H5P_DEFAULT, data.data()), "write rows " + path, loc);
  close(d, path);  // a chunk left in HDF5's cache is written here
}

Series::Series(hid_t loc, const std::string& path) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) ensure_group(loc, path.substr(0, slash));
  hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = 256;
  Handle space(check_id(H5Screate_simple(1, &dims, &maxdims), "series space"));
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "dcpl"));
  check(H5Pset_chunk(dcpl.get(), 1, &chunk), "series chunk");
  dset_ = Handle(check_id(H5Dcreate2(loc, path.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                          "create series " + path, loc));
}

void Series::append(double value) {
  hsize_t n = static_cast<hsize_t>(size_ + 1);
  check(H5Dset_extent(dset_.get(), &n), "extend series", dset_.get());
  Handle fspace(check_id(H5Dget_space(dset_.get()), "series space"));
  hsize_t start = static_cast<hsize_t>(size_), count = 1;
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select");
  Handle mspace(check_id(H5Screate_simple(1, &count, nullptr), "memspace"));
  check(H5Dwrite(dset_.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT, &value), "append", dset_.get());
  size_ += 1;
}

Rows::Rows(hid_t loc, const std::string& path, std::int64_t cols) : cols_(cols) {
  if (cols <= 0) throw InternalError("no columns for " + path);
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) ensure_group(loc, path.substr(0, slash));
  hsize_t dims[2] = {0, static_cast<hsize_t>(cols)}, maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(cols)};
  hsize_t chunk[2] = {512, static_cast<hsize_t>(cols)};
  Handle space(check_id(H5Screate_simple(2, dims, maxdims), "rows space"));
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "dcpl"));
  check(H5Pset_chunk(dcpl.get(), 2, chunk), "rows chunk");
  dset_ = Handle(check_id(H5Dcreate2(loc, path.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                          "create rows " + path, loc));
}

void Rows::append(const std::vector<double>& rows) {
  if (rows.size() % static_cast<std::size_t>(cols_) != 0) throw InternalError("partial row appended");
  const hsize_t n = rows.size() / static_cast<std::size_t>(cols_);
  if (n == 0) return;
  hsize_t dims[2] = {static_cast<hsize_t>(size_) + n, static_cast<hsize_t>(cols_)};
  check(H5Dset_extent(dset_.get(), dims), "extend rows", dset_.get());
  Handle fspace(check_id(H5Dget_space(dset_.get()), "rows space"));
  hsize_t start[2] = {static_cast<hsize_t>(size_), 0}, count[2] = {n, static_cast<hsize_t>(cols_)};
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), "select rows");
  Handle mspace(check_id(H5Screate_simple(2, count, nullptr), "memspace"));
  check(H5Dwrite(dset_.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT, rows.data()), "append rows", dset_.get());
  size_ += static_cast<std::int64_t>(n);
}

std::string library_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

}  // namespace qwen3::h5
