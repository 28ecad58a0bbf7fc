// Attributes of the checked HDF5 layer (see h5.h): scalars and string lists written, read in the forms other writers
// (h5py, older files) leave.
#include <cstdint>
#include <functional>
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

namespace detail {

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

}  // namespace detail

namespace {

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

}  // namespace

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

}  // namespace qwen3::h5
