#!/usr/bin/env python3
"""The house's size rule, checked: no file over 600 lines and no function over 80 lines in lib/, app/ or tools/
(C++, CUDA and Python). Prints each breach as PATH:LINE and exits 1 when there is one; ctest runs it (CodeSize).

A C++ function is a brace block opened at namespace or class scope after a parameter list; its length runs from the
first line of its signature to its closing brace. A Python function is a def at any depth (ast), measured the same
way. Usage: tools/code_size.py [ROOT] (default: the repository holding this file)."""
import ast
import pathlib
import re
import sys

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
FOLDERS = ("lib", "app", "tools")
CPP_SUFFIXES = {".cpp", ".h", ".cu", ".cuh"}
CONTROL = re.compile(r"^\s*(if|for|while|switch|catch|do|else|return)\b")


def strip_cpp(text):
    """The text with comments, string and character literals blanked (newlines kept, so line numbers hold)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            end = text.find(")" + (m.group(1) if m else "") + '"', i)
            j = n if end < 0 else end + len(m.group(1) if m else "") + 2
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    # Preprocessor lines hold no braces that open functions; blanked so a signature starts after them.
    return re.sub(r"(?m)^[ \t]*#.*$", "", "".join(out))


def cpp_functions(text):
    """(name, first line, last line) of every function defined at namespace or class scope."""
    code = strip_cpp(text)
    stack = []  # per open brace: "scope" (namespace, class, struct, union, extern) or "body"
    head_start = 0  # offset where the current statement or declaration began
    found = []
    for i, c in enumerate(code):
        if c in ";":
            if not stack or stack[-1] == "scope":
                head_start = i + 1
        elif c == "{":
            head = code[head_start:i]
            at_scope = not stack or stack[-1] == "scope"
            if re.search(r"(\w|[(,=])$", head):  # Name{...}, f({...}), = {...}: a braced initialiser, not a body
                stack.append("init")
                continue
            if at_scope and re.search(r"\b(namespace|class|struct|union|enum)\b[^()]*$", head.replace("\n", " ")) \
                    or at_scope and re.search(r'\bextern\s*""\s*$', head):
                stack.append("scope")
                head_start = i + 1
            elif at_scope and ")" in head and not CONTROL.match(head) and "=" not in head.split("(")[0]:
                name = [w for w in re.findall(r"([~\w:]+)\s*\(", head) if not w.startswith("__")]
                first = code.count("\n", 0, head_start + len(head) - len(head.lstrip())) + 1
                stack.append(("fn", name[0] if name else "?", first))
            else:
                stack.append("body" if not at_scope else "init")
        elif c == "}":
            if not stack:
                continue
            top = stack.pop()
            if isinstance(top, tuple):
                found.append((top[1], top[2], code.count("\n", 0, i) + 1))
            if top != "init" and (not stack or stack[-1] == "scope"):
                head_start = i + 1
    return found


def python_functions(text):
    tree = ast.parse(text)
    return [(n.name, (n.decorator_list[0].lineno if n.decorator_list else n.lineno), n.end_lineno)
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def is_python(path):
    if path.suffix == ".py":
        return True
    if path.suffix or not path.is_file():
        return False
    with open(path, "rb") as f:
        first = f.readline()
    return first.startswith(b"#!") and b"python" in first


def breaches(root):
    out = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            python = is_python(path)
            if path.suffix not in CPP_SUFFIXES and not python:
                continue
            text = path.read_text(errors="replace")
            rel = path.relative_to(root)
            lines = text.count("\n")
            if lines > MAX_FILE_LINES:
                out.append(f"{rel}:1: {lines} lines (at most {MAX_FILE_LINES})")
            for name, first, last in python_functions(text) if python else cpp_functions(text):
                if last - first + 1 > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{first}: {name}: {last - first + 1} lines (at most {MAX_FUNCTION_LINES})")
    return out


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    found = breaches(root)
    for line in found:
        print(line)
    print(f"code_size: {len(found)} breach(es) of {MAX_FILE_LINES} lines a file, {MAX_FUNCTION_LINES} a function")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
