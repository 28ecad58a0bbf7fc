// Datasets of the checked HDF5 layer (see h5.h): whole reads and writes, row ranges of 2-D ones, scalar strings, and
// the extendible series and row blocks.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/h5.h"
#include "io/h5_internal.h"

namespace qwen3::h5 {

using detail::check;
using detail::check_id;
using detail::read_strings;
using detail::space_points;

namespace {

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

}  // namespace

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

}  // namespace qwen3::h5
