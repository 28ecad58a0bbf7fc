"""Adds to a card kind's calibration the kernels that other calibrations of the same kind measured and it lacks — the
kernels only, named by prefix (e.g. gemm8_ and fp8_, FP8's), not replacing one it has (but with --replace); the
provenance goes into its `measured` line. For kernel times a GPU call already measured (qwen3-calibrate's output of
that call, kept beside the runs); on a device, `qwen3-calibrate --base` is the way (it measures what it adds).
--replace takes the others' measurements of those prefixes where they differ from the base's too — for kernels
rewritten since the base measured them — while the base's host, overlap, in-step and memory figures stay (another
host's CPU and copies are not this file's). Standard library only.
Usage: merge_calibration.py BASE OTHER [OTHER ...] --prefix gemm8_ --prefix fp8_ [--replace] [--out FILE]
(--out's default: BASE)"""
import argparse
import json
import sys


def merge(base, others, prefixes, replace=False):
    """(base with the others' kernels of those prefixes that it lacks — or, with replace, measures apart — the keys
    added); each other must calibrate base's kind."""
    added = []
    for name, other in others:
        if other.get("kind") != base.get("kind"):
            raise ValueError(f"{name} calibrates '{other.get('kind')}', the base '{base.get('kind')}'")
        keys = sorted(k for k in other["ops"] if k.startswith(tuple(prefixes))
                      and (k not in base["ops"] or (replace and base["ops"][k] != other["ops"][k])))
        for k in keys:
            base["ops"][k] = other["ops"][k]
        if keys:
            added.append(name)
            named = ", ".join(prefixes) if any(prefixes) else "all"
            base["measured"] += (f"; {len(keys)} kernels ({named}) {'taken' if replace else 'added'} from {name} "
                                 f"(measured {other['measured'].split(';')[-1].strip()})")
    return base, added


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base")
    p.add_argument("others", nargs="+")
    p.add_argument("--prefix", action="append", required=True)
    p.add_argument("--replace", action="store_true", help="take the others' measurements of kernels the base has too")
    p.add_argument("--out")
    a = p.parse_args(argv)
    with open(a.base) as f:
        base = json.load(f)
    others = []
    for path in a.others:
        with open(path) as f:
            others.append((path, json.load(f)))
    try:
        merged, added = merge(base, others, a.prefix, a.replace)
    except ValueError as e:
        sys.exit(f"merge_calibration: {e}")
    with open(a.out or a.base, "w") as f:
        json.dump(merged, f, indent=1, sort_keys=True)
        f.write("\n")
    how = "taken" if a.replace else "added"
    print(f"merge_calibration: kernels {how} from {len(added)} of {len(others)} files → {a.out or a.base}")


if __name__ == "__main__":
    main()
