"""The model repository: which models and versions the server holds, as TF Serving and Triton
lay them out on disk.

Note [Model repository]: `ember serve PATH` accepts
- a model folder (an exported program, or an HF folder with config.json): one model, named
  after the folder (or `--model-name`), version 1;
- a model's folder of versions `PATH/<version>/` (with its optional serving.json): one model;
- a repository `ROOT/<model>/<version>/...` with integer versions (TF Serving's layout), or
  `ROOT/<model>/` holding a model folder directly (version 1). An optional
  `ROOT/<model>/serving.json` sets the version policy and labels, in TF Serving's words:
  {"version_policy": {"latest": {"num_versions": 2}} | {"all": {}} |
  {"specific": {"versions": [1, 3]}}, "version_labels": {"stable": 1, "canary": 3},
  "task": "...", "max_batch_size": 8}. The default policy is the latest version only.
Requests address models by name only through the table built here at start-up: a request's
path never reaches the filesystem, so no name can escape ROOT. Model names are letters,
digits, `_`, `-` and `.` (not starting with `.`); other folders are skipped with a warning.
Links in ROOT are the operator's choice and are followed (as Triton does).
"""

from __future__ import annotations

import json
import os
import re
import sys

from ember.serve.models import folder_kind

__all__ = ["ModelRepository", "NAME_PATTERN"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


class ModelSpec:
    """One model of the repository: its versions (version -> folder) and labels."""

    def __init__(self, name: str, versions: dict, labels: dict, options: dict):
        self.name = name
        self.versions = versions
        self.labels = labels
        self.options = options

    @property
    def latest(self) -> str:
        return max(self.versions, key=int)


def _policy(options: dict, available: list, where: str) -> list:
    policy = options.get("version_policy") or {"latest": {"num_versions": 1}}
    if not isinstance(policy, dict) or len(policy) != 1:
        raise ValueError(f"{where}: version_policy must be one of latest / all / specific")
    ((kind, args),) = policy.items()
    ordered = sorted(available, key=int)
    if kind == "latest":
        n = int((args or {}).get("num_versions", 1))
        if n < 1:
            raise ValueError(f"{where}: latest.num_versions must be at least 1, got {n}")
        return ordered[-n:]
    if kind == "all":
        return ordered
    if kind == "specific":
        wanted = [str(v) for v in (args or {}).get("versions", [])]
        missing = [v for v in wanted if v not in available]
        if not wanted or missing:
            raise ValueError(
                f"{where}: specific versions {wanted} name versions that are not there "
                f"({missing}); available: {ordered}"
            )
        return sorted(wanted, key=int)
    raise ValueError(f"{where}: unknown version_policy {kind!r}; expected latest, all or specific")


class ModelRepository:
    """Models and versions found under a path (Note [Model repository])."""

    def __init__(self, path: str, model_name: str | None = None):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"serve: {path} is not a folder")
        self.models: dict[str, ModelSpec] = {}
        if folder_kind(self.path) is not None:
            name = model_name or os.path.basename(self.path.rstrip(os.sep)) or "model"
            self._check_name(name, "--model-name")
            self.models[name] = ModelSpec(name, {"1": self.path}, {}, {})
            return
        single = self._scan(model_name or os.path.basename(self.path.rstrip(os.sep)), self.path)
        if single is not None and not folder_kind(self.path):
            # PATH/<version>/ folders: one model with versions
            self._check_name(single.name, "--model-name")
            self.models[single.name] = single
            return
        for entry in sorted(os.listdir(self.path)):
            folder = os.path.join(self.path, entry)
            if entry.startswith(".") or not os.path.isdir(folder):
                continue
            if not NAME_PATTERN.match(entry):
                print(f"ember serve: skipping {folder} (not a model name)", file=sys.stderr)
                continue
            spec = self._scan(entry, folder)
            if spec is not None:
                self.models[entry] = spec
        if model_name is not None:
            if model_name not in self.models:
                raise ValueError(
                    f"serve: --model-name {model_name!r} is not in the repository "
                    f"{self.path} (models: {sorted(self.models)})"
                )
            self.models = {model_name: self.models[model_name]}
        if not self.models:
            raise ValueError(
                f"serve: {self.path} holds no model: expected a model folder (signature.json "
                "or config.json) or ROOT/<model>/<version>/ folders"
            )

    @staticmethod
    def _check_name(name: str, where: str) -> None:
        if not NAME_PATTERN.match(name):
            raise ValueError(
                f"serve: {where} {name!r}: model names are letters, digits, '_', '-', '.'"
            )

    def _scan(self, name: str, folder: str) -> ModelSpec | None:
        options = {}
        config_path = os.path.join(folder, "serving.json")
        if os.path.isfile(config_path):
            try:
                with open(config_path) as f:
                    options = json.load(f)
            except ValueError as e:
                raise ValueError(f"serve: {config_path}: malformed JSON ({e})") from None
            if not isinstance(options, dict):
                raise ValueError(f"serve: {config_path}: expected a JSON object")
        if folder_kind(folder) is not None:
            versions = {"1": folder}
        else:
            versions = {}
            for entry in os.listdir(folder):
                sub = os.path.join(folder, entry)
                if entry.isdigit() and os.path.isdir(sub):
                    if folder_kind(sub) is not None:
                        versions[str(int(entry))] = sub
            if not versions:
                return None
        chosen = _policy(options, list(versions), config_path)
        versions = {v: versions[v] for v in chosen}
        labels = {}
        for label, version in (options.get("version_labels") or {}).items():
            version = str(version)
            if version not in versions:
                raise ValueError(
                    f"serve: {config_path}: label {label!r} points at version {version}, which "
                    f"is not served (served: {sorted(versions, key=int)})"
                )
            labels[str(label)] = version
        return ModelSpec(name, versions, labels, options)
