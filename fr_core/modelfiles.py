"""Model files that no package ships: declared by plugins, fetched by ``fr-edge models``.

A plugin that needs such a file declares it through the ``fr_model_files`` hook as a
:class:`ModelFile`: the file's name, a group (a model family, what ``fetch`` is asked for),
the URL of its original repository pinned to a commit, its SHA-256 and size. The files live in
the model cache, ``cache_root()/models/<group>/`` (``$FR_EDGE_CACHE`` moves it).

* :func:`fetch` downloads each file from its URL (with a progress bar) or copies it from a
  folder (``--from DIR``, for offline installation), checks the SHA-256 and the size before
  the file appears in the cache (written to a temporary file, then renamed: a broken download
  never looks like a model), and leaves files already present and verified alone;
* :func:`status` says, for each declared file, whether it is present and verified;
* :func:`locate` is what a plugin calls at start: the verified path, or a
  :class:`ModelFileMissing` error naming the command that fixes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fr_core.errors import FrEdgeError
from fr_core.files import cache_root


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name in the group's folder
    group: str  # model family: the argument of `fr-edge models fetch`
    url: str  # the original repository's raw URL, pinned to a commit
    sha256: str
    size: int  # bytes
    licence: str = ""
    description: str = ""


class ModelFileMissing(FrEdgeError):
    """A declared model file is not in the cache (or not the file it should be)."""


def models_root() -> Path:
    return cache_root() / "models"


def group_dir(group: str, root: Path | None = None) -> Path:
    return (root or models_root()) / group


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(model: ModelFile, path: Path) -> str | None:
    """Why ``path`` is not ``model`` (None: it is)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != model.size:
        return f"{size} bytes, expected {model.size}"
    digest = sha256_file(path)
    if digest != model.sha256:
        return f"SHA-256 {digest[:16]}..., expected {model.sha256[:16]}..."
    return None


def locate(model: ModelFile, folder: Path | None = None) -> Path:
    """The verified file of ``model`` (in ``folder``, default its group's cache folder)."""
    path = (folder or group_dir(model.group)) / model.name
    problem = check(model, path)
    if problem is not None:
        hint = (
            f"fr-edge models fetch {model.group}"
            if folder is None
            else f"fr-edge models fetch {model.group} --to {folder}"
        )
        raise ModelFileMissing(
            f"model file {path} is {problem}: run `{hint}` (add `--from DIR` to copy it from a "
            "folder instead of downloading it)"
        )
    return path


def select(models: Iterable[ModelFile], wanted: Iterable[str]) -> list[ModelFile]:
    """The declared files named by ``wanted`` (groups or file names; empty: all)."""
    models = list(models)
    wanted = list(wanted)
    if not wanted:
        return models
    known = {m.group for m in models} | {m.name for m in models}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        groups = sorted({m.group for m in models})
        raise FrEdgeError(
            f"unknown model {', '.join(unknown)}: known groups {', '.join(groups) or 'none'}"
        )
    return [m for m in models if m.group in wanted or m.name in wanted]


def _download(model: ModelFile, target: Path, progress: bool) -> None:
    import requests
    from tqdm import tqdm

    with requests.get(model.url, stream=True, timeout=30) as response:
        response.raise_for_status()
        with (
            open(target, "wb") as out,
            tqdm(
                total=model.size, unit="B", unit_scale=True, desc=model.name, disable=not progress
            ) as bar,
        ):
            got = 0
            for chunk in response.iter_content(1 << 16):
                got += len(chunk)
                if got > model.size:  # never more than the pinned size on the disk
                    raise FrEdgeError(f"more than the expected {model.size} bytes")
                out.write(chunk)
                bar.update(len(chunk))


def fetch(
    models: Iterable[ModelFile],
    *,
    source: Path | None = None,
    root: Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Put each file in the cache (``root``, default :func:`models_root`), verified; from
    ``source`` (a folder holding the files by name) or from its URL. Returns the paths."""
    out = []
    for model in models:
        folder = group_dir(model.group, root)
        target = folder / model.name
        if check(model, target) is None:
            say(f"{model.group}/{model.name}: present and verified")
            out.append(target)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".fetch-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if source is not None:
                origin = Path(source) / model.name
                if not origin.is_file():
                    raise FrEdgeError(f"{origin} does not exist (--from names a folder of files)")
                shutil.copyfile(origin, tmp)
                where = str(origin)
            else:
                try:
                    _download(model, tmp, progress)
                except Exception as exc:  # requests' errors, disk errors
                    raise FrEdgeError(
                        f"{model.name}: download from {model.url} failed ({exc}); on a machine "
                        "without that network, copy the files and use --from DIR"
                    ) from None
                where = model.url
            problem = check(model, tmp)
            if problem is not None:
                raise FrEdgeError(f"{model.name} from {where} is {problem}: not installed")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        say(f"{model.group}/{model.name}: installed from {where}")
        out.append(target)
    return out


def status(models: Iterable[ModelFile], root: Path | None = None) -> list[dict[str, object]]:
    """One row per declared file: group, name, size, path, state (verified or the problem)."""
    rows = []
    for model in models:
        path = group_dir(model.group, root) / model.name
        problem = check(model, path)
        rows.append(
            {
                "group": model.group,
                "name": model.name,
                "size": model.size,
                "path": str(path),
                "state": "verified" if problem is None else problem,
                "licence": model.licence,
                "url": model.url,
            }
        )
    return rows
