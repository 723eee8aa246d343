"""Finding a pretrained folder on this machine, never over the network.

Note [Pretrained folders]: `from_pretrained(name)` takes a local folder. A name that is not a
folder (e.g. 'bert-base-uncased') is looked up in the HuggingFace cache that other tools may
have filled (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`:
`models--<org>--<name>/snapshots/<revision>/`); ember itself downloads nothing.
"""

from __future__ import annotations

import os

__all__ = ["resolve_pretrained_folder"]


def _cache_roots() -> list[str]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        roots.append(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    roots.append(os.path.join(home, "hub"))
    return roots


def resolve_pretrained_folder(
    name_or_path: str | os.PathLike, where: str = "from_pretrained", revision: str = "main"
) -> str:
    """The local folder for `name_or_path` (Note [Pretrained folders]).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> resolve_pretrained_folder(folder) == folder
        True
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        from ember.io.atomic import recover_folder

        recover_folder(path)  # a save killed mid-way: Note [Atomic folders]
        return path
    if os.path.exists(path):
        raise NotADirectoryError(
            f"{where}: {path!r} is a file; expected a folder such as a "
            "HuggingFace model folder (config.json, tokenizer.json, ...)"
        )
    repo = "models--" + path.replace("/", "--")
    for root in _cache_roots():
        snapshots = os.path.join(root, repo, "snapshots")
        if not os.path.isdir(snapshots):
            continue
        ref_file = os.path.join(root, repo, "refs", revision)
        if os.path.isfile(ref_file):
            with open(ref_file) as file:
                candidate = os.path.join(snapshots, file.read().strip())
            if os.path.isdir(candidate):
                return candidate
        candidate = os.path.join(snapshots, revision)
        if os.path.isdir(candidate):
            return candidate
        found = sorted(os.listdir(snapshots))
        if len(found) == 1:
            return os.path.join(snapshots, found[0])
    raise FileNotFoundError(
        f"{where}: {path!r} is not a folder on this machine, nor in the HuggingFace cache "
        f"({', '.join(_cache_roots())}). ember never downloads: pass the path of a folder that "
        "holds the files (e.g. one written by save_pretrained or downloaded beforehand)"
    )
