"""The API surface of TensorRT's Python bindings, read from the bindings themselves.

NVIDIA's wheels ``tensorrt-bindings`` 8.6.1 and ``tensorrt-cu12-bindings`` 10.3.0 (PyPI) hold
the compiled module without the libraries it links to (``libnvinfer`` and friends come with
CUDA). This imports each one against empty stand-ins of those libraries (built here with the C
compiler: functions that return 0, never called while importing), then lists, for the classes
the TensorRT plugin and its simulator use, every member with its pybind11 signature, the
members of the enums, and what ``nptype`` maps each DataType to. Nothing of the bindings runs
but their module initialisation, which only registers classes.

``python -m tests.trt_surface WHEEL... --out tests/trt_surfaces`` writes one JSON per wheel;
``tests/test_tensorrt.py`` checks the plugin's calls and the simulator against those files,
and rebuilds them from the wheels to check they are still what the bindings say.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

#: Classes whose members are listed (everything the plugin or the simulator touches).
CLASSES = (
    "Logger",
    "ILogger",
    "Builder",
    "INetworkDefinition",
    "ITensor",
    "OnnxParser",
    "IParserError",
    "IBuilderConfig",
    "IOptimizationProfile",
    "Runtime",
    "ICudaEngine",
    "IExecutionContext",
    "IProgressMonitor",
)
#: Enums whose members are listed with their values.
ENUMS = (
    "NetworkDefinitionCreationFlag",
    "BuilderFlag",
    "MemoryPoolType",
    "TensorIOMode",
    "DataType",
)

_DUMP = r"""
import json, re, sys
import tensorrt_bindings as t
classes, enums = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def first_line(obj):
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:
        return ""
    lines = [line.strip() for line in doc.splitlines()]
    if "Overloaded function." in lines:  # pybind11: "1. name(...) -> T", "2. ..."
        return " | ".join(re.sub(r"^\d+\. ", "", x) for x in lines if re.match(r"^\d+\. \w+\(", x))
    return lines[0]

def members(cls):
    out = {}
    for name in dir(cls):
        if name.startswith("_") and name != "__init__":
            continue
        raw = None
        for klass in cls.__mro__:
            if name in vars(klass):
                raw = vars(klass)[name]
                break
        if isinstance(raw, property):
            sig = first_line(raw.fget)
            result = sig.rsplit("->", 1)[-1].strip() if "->" in sig else ""
            out[name] = f"property -> {result}" if result else "property"
        elif callable(raw):
            out[name] = first_line(raw)
        else:
            out[name] = "attribute " + type(raw).__name__
    return out

surface = {
    "version": t.__version__,
    "module": sorted(n for n in dir(t) if not n.startswith("_")) + ["__version__"],
    "classes": {c: members(getattr(t, c)) for c in classes if hasattr(t, c)},
    "enums": {
        e: {n: int(getattr(getattr(t, e), n)) for n in dir(getattr(t, e))
            if n.isupper() and not n.startswith("_")}
        for e in enums
    },
    "nptype": {},
}
for n in surface["enums"]["DataType"]:
    try:
        surface["nptype"][n] = t.nptype(getattr(t.DataType, n)).__name__
    except TypeError:
        pass  # FP8, BF16, INT4: no numpy type
text = json.dumps(surface)
PREFIXES = {"tensorrt_bindings.tensorrt.": "", "nvinfer1::ILogger::": "ILogger.",
            "nvinfer1::": "", "nvonnxparser::": ""}
for prefix, short in PREFIXES.items():
    text = text.replace(prefix, short)
print(text)
"""


def _stand_ins(module: Path, dest: Path) -> None:
    """Empty shared libraries for every NVIDIA library ``module`` links to, defining each
    symbol it imports from them."""
    needed = re.findall(
        r"NEEDED\s+(\S+)",
        subprocess.run(
            ["objdump", "-p", str(module)], capture_output=True, text=True, check=True
        ).stdout,
    )
    undefined = subprocess.run(
        ["nm", "-D", "--undefined-only", str(module)], capture_output=True, text=True, check=True
    ).stdout.split()
    symbols = sorted(
        {
            s
            for s in undefined
            if "@" not in s
            and len(s) > 1
            and not s.startswith(("Py", "_Py", "_ITM", "__gmon", "_ZGTt", "__pthread"))
        }
    )
    source = dest / "stand_in.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in needed:
        if lib.startswith("libnv"):
            subprocess.run(
                [
                    "cc",
                    "-shared",
                    "-fPIC",
                    "-o",
                    str(dest / lib),
                    f"-Wl,-soname,{lib}",
                    str(source),
                ],
                check=True,
            )


def read_surface(wheel: Path) -> dict[str, Any]:
    """The surface of the bindings in ``wheel`` (needs a C compiler, objdump and nm)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root / "site")
        _stand_ins(root / "site" / "tensorrt_bindings" / "tensorrt.so", root)
        done = subprocess.run(
            [sys.executable, "-c", _DUMP, json.dumps(CLASSES), json.dumps(ENUMS)],
            capture_output=True,
            text=True,
            env={
                "PYTHONPATH": str(root / "site"),
                "LD_LIBRARY_PATH": str(root),
                "PATH": "/usr/bin:/bin",
            },
        )
        if done.returncode:
            raise RuntimeError(f"could not import the bindings of {wheel.name}: {done.stderr}")
    surface: dict[str, Any] = json.loads(done.stdout)
    surface["wheel"] = wheel.name
    surface["wheel_sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return surface


def file_name(surface: dict[str, Any]) -> str:
    return f"tensorrt-{surface['version']}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "trt_surfaces")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for wheel in args.wheels:
        surface = read_surface(wheel)
        path = args.out / file_name(surface)
        path.write_text(json.dumps(surface, indent=1, sort_keys=True) + "\n")
        print(path)


if __name__ == "__main__":
    main()
