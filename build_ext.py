"""Build the C kernels (csrc/) into the cffi extension `trio_llm._kernels`.

Run by setuptools during `pip install` (see setup.py's cffi_modules), or directly with
`python build_ext.py` to rebuild the extension in place for development.
The compiler is zig from the `ziglang` wheel when it works, otherwise the system C compiler;
the build prints which one it used.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

ROOT = os.path.dirname(os.path.abspath(__file__))
API_HEADER = "csrc/tl_api.h"  # the one public header: everything Python calls


def cdef_source() -> str:
    """The declarations cffi sees: tl_api.h without its preprocessor lines (the include guard
    and <stdint.h>, which cffi's parser does not take; the header holds no other directive)."""
    with open(os.path.join(ROOT, API_HEADER)) as f:
        return "".join(line for line in f if not line.lstrip().startswith("#"))


def zig_works() -> bool:
    """True when `python -m ziglang cc` can compile and link a shared object here."""
    if os.environ.get("TRIO_LLM_CC") == "system":
        return False
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int probe(void) { return 1; }\n")
        cmd = [sys.executable, "-m", "ziglang", "cc", "-shared", "-fPIC", "-O2", src,
               "-o", os.path.join(tmp, "probe.so")]
        try:
            return subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


def choose_compiler() -> str:
    """Point setuptools at zig (CC/LDSHARED) when it works; return the compiler's description."""
    if zig_works():
        zig = f"{sys.executable} -m ziglang cc"
        os.environ["CC"] = zig
        os.environ["LDSHARED"] = f"{zig} -shared"
        return "zig cc (ziglang wheel)"
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return f"system C compiler ({cc})"


COMPILER = choose_compiler()
# zig compiles for the building machine's own CPU; TRIO_LLM_PORTABLE=1 (the zipapp, wheels to
# ship) targets the baseline of the architecture instead. The AVX2 kernels are unaffected: they
# are compiled for AVX2 in their own regions and chosen at run time from CPUID.
PORTABLE = ["-mcpu=baseline"] if COMPILER.startswith("zig") and \
    os.environ.get("TRIO_LLM_PORTABLE") == "1" else []
print(f"trio-llm: building C kernels with {COMPILER}{' (portable)' if PORTABLE else ''}",
      file=sys.stderr)

ffibuilder = FFI()
ffibuilder.cdef(cdef_source())
ffibuilder.set_source(
    "trio_llm._kernels",
    f'#include "{API_HEADER}"',
    sources=sorted(glob.glob("csrc/**/*.c", recursive=True, root_dir=ROOT)),
    include_dirs=["."],
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wno-unused-function", "-fno-math-errno",
                        *PORTABLE],
    extra_link_args=["-lpthread", "-lm"] + (["-s"] if COMPILER.startswith("zig") else []),
)


def build_in_place() -> None:
    """Compile the extension into trio_llm/ (cffi builds relative to the project root)."""
    import fcntl

    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    with open(os.path.join(ROOT, "build", ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once would interleave their outputs
        for old in glob.glob(os.path.join(ROOT, "trio_llm", "_kernels*.so")):
            os.remove(old)  # a new inode: processes that loaded the old library keep it
        built = ffibuilder.compile(tmpdir=ROOT, verbose=False)
        for obj in glob.glob(os.path.join(ROOT, "**", "*.o"), recursive=True):
            os.remove(obj)
    print(f"trio-llm: built {os.path.relpath(built, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    build_in_place()
