// What the h5 layer's files (h5.cpp: files, handles, groups; h5_attributes.cpp; h5_datasets.cpp) share: the checks
// that turn a failed HDF5 call into our errors (see h5.h), and reading the strings of an attribute or a dataset.
// Internal to lib/io/h5*.cpp.
#pragma once
#include <hdf5.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace qwen3::h5::detail {

// Any HDF5 failure: the operating system's refusal (disk full, quota, I/O error) as WriteError (exit 4) or, when
// reading, InputError, naming the file; anything else is one we did not anticipate: name the call and the object.
// obj (any object of the file) names the file when HDF5's messages do not.
void check(herr_t rc, const std::string& what, hid_t obj = H5I_INVALID_HID);
hid_t check_id(hid_t id, const std::string& what, hid_t obj = H5I_INVALID_HID);  // check, returning the identifier

// The strings of a string attribute or dataset's elements, fixed-length (older files) or variable-length.
// read(mem_type, buffer) reads every element into buffer.
std::vector<std::string> read_strings(hid_t file_type, std::size_t count, const std::string& what,
                                      const std::function<herr_t(hid_t, void*)>& read);

// Elements in an attribute's or a dataset's dataspace.
std::size_t space_points(hid_t space);

}  // namespace qwen3::h5::detail
