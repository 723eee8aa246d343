"""`PreTrainedModel`: loading and saving models in the HuggingFace folder format.

Note [Weight map]: `from_pretrained` never hands the checkpoint to `load_state_dict` blindly.
It builds an explicit map, model key -> checkpoint key, after two renamings that HuggingFace
also applies: legacy LayerNorm names (`gamma`/`beta` -> `weight`/`bias`) and the base-model
prefix (a `BertModel` checkpoint, keys `embeddings...`, loads into `BertForMaskedLM`, keys
`bert.embeddings...`, and the reverse). Each mapped tensor's shape is checked against the
model's before anything is copied; a mismatch raises, naming every such key, unless
`ignore_mismatched_sizes=True`, which keeps the fresh initialisation for those keys and
reports them. Tensors are read one at a time from the memory-mapped file and copied into the
parameters, so loading needs about the model's size in memory.

Note [Tied weights]: `_tied_weights_keys` maps a target key to the source key whose Parameter
it shares (the MLM decoder's weight is the word embedding matrix). A tied target is not saved
(HuggingFace's safetensors files leave it out too) and is not reported missing when its source
loads. A tie whose source is the input embedding matrix (an LM head's weight) holds only when
the config's `tie_word_embeddings` does, as in HuggingFace; other ties (an MLM decoder's bias)
always hold.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np

import ember
from ember import dtypes as _dt
from ember import nn
from ember.autograd import no_grad
from ember.io import (
    atomic_folder,
    resolve_pretrained_folder,
    safe_open,
    save_file,
    save_folder,
)
from ember.transformers.configuration_utils import PretrainedConfig

logger = logging.getLogger("ember.transformers")

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"

_LEGACY_NAMES = ((re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias"))


class LoadingInfo(dict):
    """What `from_pretrained` did with each key: missing_keys (newly initialised),
    unexpected_keys (in the checkpoint, not used), mismatched_keys ((key, checkpoint shape,
    model shape), newly initialised), error_msgs."""

    def summary(self, model_name: str, source: str) -> str:
        lines = []
        if self["missing_keys"]:
            lines.append(
                f"Some weights of {model_name} were not in the checkpoint at {source} "
                f"and are newly initialised: {', '.join(self['missing_keys'])}. "
                "Train the model on a down-stream task before using it for predictions."
            )
        if self["mismatched_keys"]:
            shown = ", ".join(
                f"{k} (checkpoint {c}, model {m})" for k, c, m in self["mismatched_keys"]
            )
            lines.append(
                f"Some weights of {model_name} had other shapes in the checkpoint at "
                f"{source} and are newly initialised: {shown}."
            )
        if self["unexpected_keys"]:
            lines.append(
                f"Some weights of the checkpoint at {source} were not used by "
                f"{model_name}: {', '.join(self['unexpected_keys'])}."
            )
        return "\n".join(lines)


def _shard_path(root: str, shard, index: str, where: str) -> str:
    """A shard file named by an index, confined to the model folder: an absolute path, '..'
    or a link that leads outside is refused (a hostile index could name any file)."""
    if not isinstance(shard, str) or not shard or "\0" in shard:
        raise ValueError(f"{where}: {index} names shard {shard!r}; expected a file name")
    path = os.path.realpath(os.path.join(root, shard))
    if os.path.isabs(shard) or os.path.commonpath([root, path]) != root:
        raise ValueError(
            f"{where}: {index} names shard {shard!r}, which is outside the model folder "
            f"{root!r}; shards must be files inside it"
        )
    return path


class _CheckpointReader:
    """name -> NumPy array over model.safetensors, a sharded index, or (allowed) a pickle."""

    def __init__(self, folder: str, allow_pickle: bool, where: str):
        self.handles: dict[str, safe_open] = {}
        self.location: dict[str, str] = {}
        self.arrays: dict[str, np.ndarray] | None = None
        single = os.path.join(folder, SAFE_WEIGHTS_NAME)
        index = os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)
        pickled = os.path.join(folder, PICKLE_WEIGHTS_NAME)
        if os.path.isfile(single):
            self.source = single
            self.handles[single] = safe_open(single, framework="np")
            self.location = dict.fromkeys(self.handles[single].keys(), single)
        elif os.path.isfile(index):
            self.source = index
            try:
                with open(index, "rb") as file:
                    parsed = json.loads(file.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
                raise ValueError(f"{where}: {index} is not valid UTF-8 JSON ({error})") from None
            weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
            if not isinstance(weight_map, dict):
                raise ValueError(f"{where}: {index} has no 'weight_map' object")
            root = os.path.realpath(folder)
            for key, shard in weight_map.items():
                path = _shard_path(root, shard, index, where)
                if path not in self.handles:
                    if not os.path.isfile(path):
                        raise FileNotFoundError(
                            f"{where}: shard {shard!r} named in {index} is not in the folder"
                        )
                    self.handles[path] = safe_open(path, framework="np")
                self.location[key] = path
        elif os.path.isfile(pickled):
            self.source = pickled
            if not allow_pickle:
                raise ValueError(
                    f"{where}: {folder!r} holds only {PICKLE_WEIGHTS_NAME}, a pickle file, which "
                    "can run code when loaded. Pass allow_pickle=True if you trust it, or "
                    "convert it to model.safetensors"
                )
            self.arrays = ember.load(pickled, allow_pickle=True, framework="np")
            self.arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        else:
            raise FileNotFoundError(
                f"{where}: no weights in {folder!r}: expected {SAFE_WEIGHTS_NAME}, "
                f"{SAFE_WEIGHTS_INDEX_NAME} (sharded) or {PICKLE_WEIGHTS_NAME} (allow_pickle)"
            )

    def keys(self) -> list[str]:
        return list(self.arrays) if self.arrays is not None else list(self.location)

    def nbytes(self) -> int:
        if self.arrays is not None:
            return sum(a.nbytes for a in self.arrays.values())
        return sum(
            end - begin for h in self.handles.values() for _, _, begin, end in h._entries.values()
        )

    def shape(self, key: str) -> tuple:
        if self.arrays is not None:
            return tuple(self.arrays[key].shape)
        return tuple(self.handles[self.location[key]]._entry(key)[1])

    def get(self, key: str) -> np.ndarray:
        if self.arrays is not None:
            return self.arrays[key]
        return self.handles[self.location[key]].get_tensor(key)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


# Note [Layers the checkpoint holds]: `from_pretrained` builds the model the config describes
# before it reads a weight, so a config that asks for more layers than the checkpoint holds
# would build them all (3,681,617 layers for a fuzzed `num_hidden_layers`, tens of minutes of
# module construction before any memory bound is reached) only to leave them without weights.
# So the config's `num_hidden_layers` is checked against the layers numbered in the checkpoint's
# keys (`encoder.layer.N.`, `transformer.layer.N.`, `h.N.`, `layers.N.`) first, and a config
# asking for more is refused, naming both counts. Fewer is allowed (the extra checkpoint layers
# are unexpected keys, as in HuggingFace); a checkpoint without numbered layers is not checked.
_LAYER_KEY = re.compile(r"(?:^|\.)(?:layer|layers|h)\.(\d+)\.")


def _check_layer_count(config, reader, folder: str, where: str) -> None:
    """ValueError where config.json asks for more layers than the checkpoint holds (Note
    [Layers the checkpoint holds])."""
    wanted = getattr(config, "num_hidden_layers", None)
    if not isinstance(wanted, int) or isinstance(wanted, bool):
        return
    numbers = {int(m.group(1)) for key in reader.keys() if (m := _LAYER_KEY.search(key))}
    if numbers and wanted > max(numbers) + 1:
        raise ValueError(
            f"{where}: {folder!r} (config.json): num_hidden_layers is {wanted}, but the "
            f"checkpoint holds {max(numbers) + 1} layers (numbered 0-{max(numbers)}); "
            "is config.json the checkpoint's?"
        )


def init_normal_weights(module: nn.Module, std: float) -> None:
    """HuggingFace's initialisation of the common modules: normal(0, std) for Linear and
    Embedding weights (an Embedding's padding row zero), zero biases, LayerNorm ones and
    zeros; other modules are left as they are."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx] = 0.0
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PreTrainedModel(nn.Module):
    """Base class of the models: config handling, weight init, tying, loading and saving.

    Subclasses set `config_class`, `base_model_prefix`, and optionally `_init_weights` (for
    modules beyond `init_normal_weights`'), `_tied_weights_keys` (Note [Tied weights]) and
    `_keys_to_ignore_on_load_unexpected`.
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix: str = ""
    _tied_weights_keys: dict[str, str] = {}
    _keys_to_ignore_on_load_unexpected: tuple[str, ...] = ()

    def __init__(self, config: PretrainedConfig, *args, **kwargs):
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise TypeError(
                f"{type(self).__name__}: expected a PretrainedConfig (e.g. "
                f"{self.config_class.__name__}), got {type(config).__name__}"
            )
        self.config = config

    # --- init and tying ---------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        """HuggingFace's default initialisation with the config's `initializer_range`
        (`init_normal_weights`); models with other modules extend it."""
        init_normal_weights(module, self.config.initializer_range)

    def post_init(self) -> None:
        """Initialise every weight (`_init_weights`), then tie (Note [Tied weights])."""
        with no_grad():
            self.apply(self._init_weights)
        self.tie_weights()

    def _initialize_unloaded(self, info: LoadingInfo) -> None:
        """Initialise the modules that hold a weight the checkpoint did not (missing, or
        mismatched and ignored): their own `reset_parameters`, then `_init_weights`, as a
        freshly built model would have them (Note [Skipped initialisation])."""
        unloaded = set(info["missing_keys"]) | {k for k, _, _ in info["mismatched_keys"]}
        if not unloaded:
            return
        with no_grad():
            for prefix, module in self.named_modules():
                prefix = prefix + "." if prefix else ""
                own = [name for name, _ in module.named_parameters(recurse=False)]
                own += [name for name, _ in module.named_buffers(recurse=False)]
                if not any(prefix + name in unloaded for name in own):
                    continue
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                self._init_weights(module)
        self.tie_weights()

    def _tied_pairs(self):
        """(target, source) of each tie in force (Note [Tied weights]): a tie to the input
        embeddings holds only while the config's `tie_word_embeddings` (default True) does."""
        tie_embeddings = getattr(self.config, "tie_word_embeddings", True)
        for target, source in self._tied_weights_keys.items():
            if not tie_embeddings and self._is_input_embeddings(source):
                continue
            yield target, source

    def _is_input_embeddings(self, key: str) -> bool:
        return self.get_parameter(key) is self.get_input_embeddings().weight

    def tie_weights(self) -> None:
        for target, source in self._tied_pairs():
            owner, _, name = target.rpartition(".")
            setattr(self.get_submodule(owner), name, self.get_parameter(source))

    def get_input_embeddings(self):
        base = getattr(self, self.base_model_prefix, self)
        return base.embeddings.word_embeddings

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    # --- attention masks -------------------------------------------------------------------
    def _compile_padding(self, args, kwargs):
        """`ember.compile(model)` pads a call's sequence length up to its bucket (Note
        [Sequence buckets] in ember/transformers/compile_buckets.py); None: run it as it is."""
        from ember.transformers.compile_buckets import padded_call

        return padded_call(self, args, kwargs)

    @staticmethod
    def get_extended_attention_mask(attention_mask, dtype=None):
        """A (batch, seq) or (batch, q, k) mask of 1 (attend) / 0 (padding) -> an additive
        mask broadcastable to (batch, heads, q, k): 0 where attended, the dtype's lowest
        value where masked (HuggingFace's convention, so that padded keys get exactly zero
        weight and fully finite arithmetic)."""
        dtype = dtype or ember.float32
        if attention_mask.ndim == 2:
            extended = attention_mask[:, None, None, :]
        elif attention_mask.ndim == 3:
            extended = attention_mask[:, None, :, :]
        else:
            raise ValueError(
                f"attention_mask: expected (batch, seq) or (batch, q, k), got shape "
                f"{tuple(attention_mask.shape)}"
            )
        extended = extended.to(dtype)
        return (1.0 - extended) * float(np.finfo(dtype.numpy).min)

    def get_head_mask(self, head_mask, num_hidden_layers: int, num_heads: int) -> list:
        """HuggingFace's head mask: (num_heads,) for every layer or (num_layers, num_heads),
        1 keeps a head, 0 silences it (values multiply the attention probabilities). Returns
        one (1, num_heads, 1, 1) tensor per layer in the model's dtype, or Nones."""
        if head_mask is None:
            return [None] * num_hidden_layers
        head_mask = ember.as_tensor(head_mask)
        shape = tuple(head_mask.shape)
        if shape == (num_heads,):
            head_mask = head_mask.reshape(1, num_heads).expand(num_hidden_layers, num_heads)
        elif shape != (num_hidden_layers, num_heads):
            raise ValueError(
                f"{type(self).__name__}: head_mask must have shape (num_heads,) = "
                f"({num_heads},) or (num_layers, num_heads) = "
                f"({num_hidden_layers}, {num_heads}), got {shape}"
            )
        head_mask = head_mask.to(self.dtype)
        return [head_mask[i].reshape(1, num_heads, 1, 1) for i in range(num_hidden_layers)]

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs):
        return cls(config, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *model_args,
        config=None,
        allow_pickle: bool = False,
        output_loading_info: bool = False,
        ignore_mismatched_sizes: bool = False,
        dtype=None,
        torch_dtype=None,
        local_files_only: bool = True,
        gguf_file=None,
        **kwargs,
    ):
        """Build the model from a HuggingFace folder: `config.json` plus `model.safetensors`
        (or a sharded `model.safetensors.index.json`; `pytorch_model.bin` only with
        `allow_pickle=True`). Keyword arguments naming config fields override the config
        (e.g. `num_labels=3`). No network access (Note [Pretrained folders]).

        Example:
            >>> import tempfile
            >>> from ember.transformers import BertConfig, BertModel
            >>> folder = tempfile.mkdtemp()
            >>> BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
            ...     num_attention_heads=4, intermediate_size=37)).save_pretrained(folder)
            >>> model, info = BertModel.from_pretrained(folder, output_loading_info=True)
            >>> info["missing_keys"], info["unexpected_keys"]
            ([], [])
        """
        del local_files_only  # always local
        where = f"{cls.__name__}.from_pretrained"
        folder = resolve_pretrained_folder(pretrained_model_name_or_path, where)
        if config is None:
            config = cls.config_class.from_pretrained(folder, gguf_file=gguf_file)
        elif not isinstance(config, PretrainedConfig):
            config = cls.config_class.from_pretrained(config)
        model_kwargs = config.update_known(kwargs)
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(dtype, str) and dtype == "auto":  # the dtype the config names, if any
            dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        try:
            dtype = None if dtype is None else _dt.as_dtype(dtype)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{where}: dtype {dtype!r} is not one ember has ({error})") from None
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"{where}: dtype must be a floating dtype or 'auto', got {dtype}")
        if gguf_file is not None:
            from ember.transformers.gguf_utils import GGUFCheckpointReader, gguf_path

            reader = GGUFCheckpointReader(gguf_path(folder, gguf_file, where), where)
        else:
            reader = _CheckpointReader(folder, allow_pickle, where)  # file errors come first
        try:
            _check_layer_count(config, reader, folder, where)
        except ValueError:
            reader.close()
            raise
        # Note [Half-precision weights]: the parameters are made in the requested dtype and each
        # checkpoint tensor is converted on its way in, so no float32 copy of the model is ever
        # made (its freed pages would stay in the allocator and count as resident memory)
        default = _dt.get_default_dtype()
        try:
            try:
                if dtype is not None and dtype.is_floating_point:
                    _dt.set_default_dtype(dtype)
                with nn.init.skip_initialization():  # Note [Skipped initialisation]
                    model = cls(config, *model_args, **model_kwargs)
            except (TypeError, ValueError, KeyError) as error:  # a config value it refuses
                raise ValueError(f"{where}: {folder!r} (config.json): {error}") from None
            except MemoryError as error:
                raise MemoryError(
                    f"{where}: the model that {folder!r}'s config.json describes does not "
                    f"fit in memory ({error}): is config.json right?"
                ) from None
            finally:
                _dt.set_default_dtype(default)
            if dtype is not None:
                model.to(dtype)
            info = model._load_checkpoint(reader, ignore_mismatched_sizes, where)
        finally:
            reader.close()
        model._initialize_unloaded(info)
        model.eval()  # as HuggingFace: dropout off until .train()
        load_extras = getattr(model, "_load_extras", None)  # e.g. generation_config.json
        if load_extras is not None:
            load_extras(folder)
        message = info.summary(cls.__name__, folder)
        if info["missing_keys"] or info["mismatched_keys"]:
            logger.warning(message)
        elif message:
            logger.info(message)
        return (model, info) if output_loading_info else model

    def _weight_map(self, checkpoint_keys: list[str]):
        """Note [Weight map]: (model key -> checkpoint key, unused checkpoint keys)."""
        renamed = {}
        for key in checkpoint_keys:
            new = key
            for pattern, replacement in _LEGACY_NAMES:
                new = pattern.sub(replacement, new)
            renamed[new] = key
        own = list(self.state_dict().keys())
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        if prefix:
            model_has_prefix = any(k.startswith(prefix) for k in own)
            checkpoint_has_prefix = any(k.startswith(prefix) for k in renamed)
            if model_has_prefix and not checkpoint_has_prefix:  # base checkpoint -> head model
                renamed = {prefix + k: v for k, v in renamed.items()}
            elif checkpoint_has_prefix and not model_has_prefix:  # head checkpoint -> base
                renamed = {
                    (k[len(prefix) :] if k.startswith(prefix) else "\0" + k): v
                    for k, v in renamed.items()
                }
        mapping = {k: renamed[k] for k in own if k in renamed}
        used = set(mapping.values())
        unused = [k for k in checkpoint_keys if k not in used]
        return mapping, own, unused

    def _load_checkpoint(
        self, reader: _CheckpointReader, ignore_mismatched_sizes: bool, where: str
    ) -> LoadingInfo:
        mapping, own, unused = self._weight_map(reader.keys())
        params = self.state_dict(keep_vars=True)
        mismatched = []
        for key, source in mapping.items():
            have, want = reader.shape(source), tuple(params[key].shape)
            if have != want:
                mismatched.append((key, have, want))
        if mismatched and not ignore_mismatched_sizes:
            listed = "\n\t".join(f"{k}: checkpoint {c}, model {m}" for k, c, m in mismatched)
            raise RuntimeError(
                f"{where}: shapes differ between the checkpoint {reader.source!r} and "
                f"{type(self).__name__} built from its config.json:\n\t{listed}\nPass "
                "ignore_mismatched_sizes=True to keep those weights newly "
                "initialised (e.g. a classifier with another number of labels)"
            )
        skipped = {k for k, _, _ in mismatched}
        loaded = set()
        with no_grad():
            for key, source in mapping.items():
                if key in skipped:
                    continue
                target = params[key]
                array = reader.get(source)
                if array.dtype != target.dtype.numpy:
                    array = array.astype(target.dtype.numpy)
                target.copy_(ember.from_numpy(array))
                loaded.add(key)
        tied_ok = {t for t, s in self._tied_pairs() if s in loaded}
        missing = [k for k in own if k not in mapping and k not in tied_ok]
        ignore = [re.compile(p) for p in self._keys_to_ignore_on_load_unexpected]
        unexpected = [k for k in unused if not any(p.search(k) for p in ignore)]
        return LoadingInfo(
            missing_keys=missing,
            unexpected_keys=unexpected,
            mismatched_keys=mismatched,
            error_msgs=[],
        )

    # --- saving ----------------------------------------------------------------------------
    def save_pretrained(
        self, save_directory, state_dict=None, safe_serialization: bool = True
    ) -> None:
        """Write `config.json` and `model.safetensors` (together atomically: a kill leaves the
        old pair or the new one) into a folder that HuggingFace transformers and ember load.
        Tied copies are left out (Note [Tied weights])."""
        if not safe_serialization:
            raise ValueError(
                f"{type(self).__name__}.save_pretrained: ember writes safetensors "
                "only (pickle files can run code when loaded)"
            )
        save_directory = save_folder(save_directory, f"{type(self).__name__}.save_pretrained")
        state = self.state_dict() if state_dict is None else dict(state_dict)
        for target, _ in self._tied_pairs():
            state.pop(target, None)
        tensors = {
            # `.array`, not `.numpy()`: only read here (Note [Pack validity])
            k: np.ascontiguousarray(
                v.array
                if type(getattr(v, "array", None)) is np.ndarray
                else v.numpy()
                if hasattr(v, "numpy")
                else v
            )
            for k, v in state.items()
        }
        self.config.architectures = [type(self).__name__]
        with atomic_folder(save_directory):  # weights and config together: Note [Atomic folders]
            save_file(
                tensors, os.path.join(save_directory, SAFE_WEIGHTS_NAME), metadata={"format": "pt"}
            )
            self.config.save_pretrained(save_directory)
            save_extras = getattr(self, "_save_extras", None)  # e.g. generation_config.json
            if save_extras is not None:
                save_extras(save_directory)


__all__ = ["LoadingInfo", "PreTrainedModel"]
