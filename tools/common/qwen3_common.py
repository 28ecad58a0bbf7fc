"""What the Python tools share (qwen3-sweep, qwen3-report, tools/bench), so that each name, format and message is
written once: the house's exit codes and the one-line error that ends a tool, the command-line plumbing every tool's
main does the same way, a layout's name (T<tp>P<pp>[C<cp>]D<dp>) and a sweep cell's (<model>-L<length>-<layout>, with
-<precision> for a precision other than bf16; also its results file's), the sweep's cells.json format and the last
line qwen3-sweep --local writes into a cell's log (both read back by qwen3-report), and the reading of HDF5 strings
and byte counts. Standard library only: qwen3-sweep runs under any Python 3. In build/bin this file lies beside the
tools; in the source tree the tools find it in tools/common (each tool's entry script puts that folder on its import
path)."""
import re
import signal
import sys

# The house's exit codes that the Python tools end with (docs/exit-codes.md; lib/core/error.h's kExitCodes).
EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT = 2, 3, 4
EXIT_PREEMPTED, EXIT_DIVERGED = 7, 8  # qwen3-pretrain's: saved a checkpoint and stopped; a loss was not finite

# DIR/cells.json, qwen3-sweep's list of every cell of a sweep (with its refusals), read by qwen3-report (docs/cli.md).
CELLS_FORMAT, CELLS_VERSION = "qwen3-sweep-cells", 1
# The last line qwen3-sweep --local writes into a cell's log, followed by the exit code; qwen3-report reads it.
LOG_END = "qwen3-sweep: cell ended with exit code"

LAYOUT_NAME = r"T\d+P\d+(?:C\d+)?D\d+"  # what layout_name gives
# qwen3-pretrain's default --precision: what a cell's name leaves unsaid, and what a run ran in when its results file's
# /config records no precision (files from before --precision).
DEFAULT_PRECISION = "bf16"
# A sweep cell's results file: <model>-L<length>-<layout>[-<precision>].h5, or .h5.partial while the run writes it.
CELL_FILE = re.compile(r"^(?P<model>.+)-L(?P<seq>\d+)-(?P<layout>" + LAYOUT_NAME +
                       r")(?:-(?P<precision>[a-z0-9]+))?\.h5(?:\.partial)?$")
GIB = 2**30


def failer(program):
    """The tool's fail(code, message): one line `<program>: error: <message>` on stderr, then exit with the code."""
    def fail(code, message):
        print(f"{program}: error: {message}", file=sys.stderr)
        sys.exit(code)
    return fail


def parse_or_usage(parser):
    """The parsed command line; argparse's own exits kept, a refused command line as exit code 2 (usage)."""
    try:
        return parser.parse_args()
    except SystemExit as e:
        sys.exit(EXIT_USAGE if e.code else 0)


def quiet_broken_pipe():
    """`tool | head` ends the output quietly: the default action of SIGPIPE rather than Python's traceback."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def layout_name(tp, pp, cp, dp):
    """The one name of a layout in every tool: T<tp>P<pp>[C<cp>]D<dp>, C only with context parallelism (cp > 1)."""
    return f"T{tp}P{pp}" + (f"C{cp}" if cp > 1 else "") + f"D{dp}"


def cell_name(model, seq, layout, precision=DEFAULT_PRECISION):
    """A sweep cell's name, which its results file (results/<name>.h5) and log (logs/<name>.log) take too; a precision
    other than bf16 adds -<precision> (0.6B-L1024-T1P1D1-fp8), so that a bf16 cell keeps the name it always had."""
    return f"{model}-L{seq}-{layout}" + ("" if precision == DEFAULT_PRECISION else f"-{precision}")


def cell_of_name(file_name):
    """(model, length, layout, precision) of a results file named as a sweep names a cell's, else None."""
    m = CELL_FILE.match(file_name)
    return (m["model"], int(m["seq"]), m["layout"], m["precision"] or DEFAULT_PRECISION) if m else None


def text(v):
    """An HDF5 string as str: h5py gives str for variable-length UTF-8 attributes, bytes for older fixed-length ones."""
    return v.decode() if isinstance(v, bytes) else str(v)


def gib(nbytes):
    """Bytes in GiB, as a float."""
    return float(nbytes) / GIB
