// Implementation of the checked HDF5 layer (see h5.h): failures diagnosed and reported, handles, files and groups.
// Attributes are in h5_attributes.cpp, datasets in h5_datasets.cpp.
#include "io/h5.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/h5_internal.h"

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

}  // namespace

namespace detail {

void check(herr_t rc, const std::string& what, hid_t obj) {
  const int errno_after_call = errno;
  if (rc < 0) throw_failure(diagnose(what, "", errno_after_call, obj));
}
hid_t check_id(hid_t id, const std::string& what, hid_t obj) {
  const int errno_after_call = errno;
  if (id < 0) throw_failure(diagnose(what, "", errno_after_call, obj));
  return id;
}

}  // namespace detail

using detail::check;
using detail::check_id;

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

std::string library_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

}  // namespace qwen3::h5
