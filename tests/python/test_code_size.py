"""tools/code_size.py, the size rule's checker: it finds a C++ or CUDA function by its body at namespace or class
scope (not a braced initialiser, a lambda or a control block), measures it from its signature to its closing brace,
and reports files and functions over the limits."""
import code_size


def lines(n, text="  x += 1;"):
    return "\n".join([text] * n)


def test_cpp_functions_are_measured_from_signature_to_brace():
    src = ("#include <x>\nnamespace a {\nnamespace {\nint f(int x) {\n" + lines(3) + "\n}\n}  // namespace\n"
           "struct S {\n  void g() const { return; }\n};\n"
           "Thing::Thing(int v)\n    : v_(v), r_(R{1, 2}) {\n" + lines(2) + "\n}\n}  // namespace a\n")
    found = code_size.cpp_functions(src)
    assert ("f", 4, 8) in found
    assert ("g", 11, 11) in found
    assert ("Thing::Thing", 13, 17) in found
    assert len(found) == 3  # R{1, 2} is an initialiser, not a function


def test_braces_in_strings_comments_and_control_blocks_do_not_count():
    src = 'void h() {\n  if (a) {\n    s = "{";  // }\n  }\n  for (;;) { break; }\n}\n'
    assert code_size.cpp_functions(src) == [("h", 1, 6)]


def test_a_long_function_and_a_long_file_are_breaches(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "long.cpp").write_text("void long_one() {\n" + lines(80) + "\n}\n")
    (tmp_path / "lib" / "short.cpp").write_text("void ok() {\n" + lines(78) + "\n}\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "big.py").write_text("def f():\n" + lines(80, "    pass") + "\n" + lines(530, "x = 1") + "\n")
    found = code_size.breaches(tmp_path)
    assert "lib/long.cpp:1: long_one: 82 lines (at most 80)" in found
    assert not any("short.cpp" in b for b in found)
    assert "tools/big.py:1: f: 81 lines (at most 80)" in found
    assert any(b.startswith("tools/big.py:1: ") and "lines (at most 600)" in b for b in found)
