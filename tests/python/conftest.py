"""pytest setup for the Python tools' tests: the tools' folders on the import path (they are scripts and modules
beside them, not a package; tools/common holds what they share, qwen3_common)."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
for folder in ("tools", "tools/common", "tools/bench", "tools/report", "tools/sweep"):
    sys.path.insert(0, os.path.join(ROOT, folder))
