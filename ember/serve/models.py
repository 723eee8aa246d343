"""What the server runs: a served model wraps an exported program (ember.io.export) or an
HF-format model folder with its tokenizer, and answers three questions the protocols and the
batcher ask: its tensor signature, how to check one request (`prepare`, on the HTTP thread),
and how to run a batch of checked requests (`run_batch`, on the model's worker thread).

Note [Batching and padding]: requests are merged along dim 0. Two requests fit in one batch
when their other dims agree, or, for token models, after padding: an HF folder's text is
tokenized for the whole batch with padding to the longest text (rounded up to a multiple of
8, so that few distinct shapes get compiled), and an exported program with an input named
`attention_mask` pads every input along its dynamic non-batch dims with zeros (the pad token
and a masked position). Outputs are split back by rows, and output dims that follow a padded
symbol are cropped back to the request's own size, so a request's result equals what it gets
alone up to float rounding (the masked positions add exact zeros).

Note [Packed batches]: a batch of short texts padded to its longest computes padding: at 16
Rotten Tomatoes snippets (6-38 tokens, median 20) a third of the tokens run were padding even
in length groups. For BERT-family encoders (absolute positions, the base model's outputs
pooled or classified per text) the batch is packed instead: texts are laid end to end in
rows of `PACK_WIDTH` tokens (first fit, longest first), each text with its own position ids
from 0 and a block-diagonal (row, width, width) attention mask, so that a token attends only
to its own text, with exactly zero weight elsewhere (the additive mask's lowest float, as for
padding). Each text's token states are then what it gets alone up to float rounding; the
sentence embedding pools its own tokens and the classifier reads its own [CLS] state. Rows
have few distinct shapes (rows x PACK_WIDTH, or the longest text rounded up to 8 when it is
longer), so few executors get compiled. A row's attention costs width^2 whatever it holds, and
the masked pairs between texts are computed too: 48 tokens per row served 3-11% more texts/s
than 64 on these snippets (MiniLM, 1 thread, batches of 4-16), 32 left too many rows part
empty.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np

from ember.serve.protocol import DATATYPES, RequestError, datatype_of

__all__ = ["TensorSpec", "ServedModel", "ExportedModel", "TextModel", "load_model", "folder_kind"]

PAD_MULTIPLE = 8
GROUP_COST = 64  # the overhead of one model run, in tokens (TextModel._groups)
PACK_WIDTH = 48  # tokens per packed row (Note [Packed batches])
WARM_PACKED_ROWS = 6  # 16 requests of 16-18 tokens
PACKING = os.environ.get("EMBER_SERVE_PACKING", "1") != "0"  # the default of TextModel.packing


class TensorSpec:
    """One input or output: name, KServe datatype, shape with -1 for dynamic dims."""

    __slots__ = ("name", "datatype", "shape", "dtype")

    def __init__(self, name: str, datatype: str, shape: list):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.dtype = DATATYPES[datatype]

    def as_v2(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}

    def __repr__(self) -> str:
        return f"TensorSpec({self.name}: {self.datatype}{self.shape})"


class Prepared:
    """One checked request: its arrays, its row count and what it may be batched with."""

    __slots__ = ("feeds", "rows", "key", "sizes")

    def __init__(self, feeds: dict, rows: int, key, sizes: dict | None = None):
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.sizes = sizes or {}


class ServedModel:
    """The interface the server needs (Note [Batching and padding])."""

    platform = "ember"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list | None = None
    batch_dim = True  # dim 0 of every input and output is the batch

    def prepare(self, feeds: dict) -> Prepared:
        raise NotImplementedError

    def run_batch(self, batch: list[Prepared]) -> list[dict]:
        raise NotImplementedError

    def warmup(self) -> None:
        pass

    def replica(self) -> "ServedModel":
        """A copy for another worker thread (Note [Model instances] in batching.py): the same
        weights, its own compiled executors. The base class has no state to copy."""
        return self

    def check_names(self, feeds: dict) -> None:
        names = [s.name for s in self.inputs]
        for n in feeds:
            if n not in names:
                raise RequestError(f"unknown input {n!r}; the model has inputs {names}")
        for n in names:
            if n not in feeds:
                raise RequestError(f"missing input {n!r}; the model has inputs {names}")


def _check_datatype(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    got = datatype_of(array.dtype)
    if got != spec.datatype:
        raise RequestError(f"input {spec.name!r}: expected datatype {spec.datatype}, got {got}")
    return array


class ExportedModel(ServedModel):
    """An exported program (Note [Exported program format]) served as it is."""

    def __init__(self, program, labels: list | None = None):
        self.program = program
        sig = program.signature
        self.inputs = [TensorSpec(i["name"], _v2(i["dtype"]), i["shape"]) for i in sig["inputs"]]
        self.outputs = [TensorSpec(o["name"], _v2(o["dtype"]), o["shape"]) for o in sig["outputs"]]
        axes: dict = {}
        for symbol, where in sig.get("dynamic_dims", {}).items():
            for name, axis in where:
                axes.setdefault(name, {})[int(axis)] = symbol
        self.axes = axes
        batch = {axes.get(i.name, {}).get(0) for i in self.inputs}
        out_batch = {(o.get("dim_symbols") or [None])[0] for o in sig["outputs"]}
        self.batch_symbol = batch.pop() if len(batch) == 1 and None not in batch else None
        self.batch_dim = self.batch_symbol is not None and out_batch == {self.batch_symbol}
        self.pads = (
            any(i.name == "attention_mask" for i in self.inputs)
            or program.metadata.get("padding") == "true"
        )
        self.out_symbols = {o["name"]: o.get("dim_symbols") or [] for o in sig["outputs"]}
        self.labels = labels

    def prepare(self, feeds: dict) -> Prepared:
        self.check_names(feeds)
        arrays = []
        for spec in self.inputs:
            arrays.append(_check_datatype(spec, feeds[spec.name]))
        try:
            sizes = self.program.sizes_of(arrays)
        except ValueError as e:
            raise RequestError(str(e)) from None
        rows = int(arrays[0].shape[0]) if self.batch_dim else 1
        others = tuple(sorted((s, v) for s, v in sizes.items() if s != self.batch_symbol))
        key = "pad" if self.pads else others
        return Prepared({s.name: a for s, a in zip(self.inputs, arrays)}, rows, key, dict(sizes))

    def run_batch(self, batch: list[Prepared]) -> list[dict]:
        if len(batch) == 1:
            return [self._run(batch[0].feeds)]
        target = {}
        for p in batch:
            for s, v in p.sizes.items():
                if s != self.batch_symbol:
                    target[s] = max(target.get(s, 0), v)
        merged = {}
        for spec in self.inputs:
            parts = []
            for p in batch:
                a = p.feeds[spec.name]
                widths = [(0, 0)] * a.ndim
                for axis, symbol in self.axes.get(spec.name, {}).items():
                    if symbol != self.batch_symbol:
                        widths[axis] = (0, target[symbol] - a.shape[axis])
                parts.append(np.pad(a, widths) if any(w for _, w in widths) else a)
            merged[spec.name] = np.concatenate(parts, 0)
        out = self._run(merged)
        results, start = [], 0
        for p in batch:
            one = {}
            for name, array in out.items():
                part = array[start : start + p.rows]
                symbols = self.out_symbols.get(name, [])
                index = [slice(None)] * part.ndim
                for axis, symbol in enumerate(symbols):
                    if symbol and symbol != self.batch_symbol and symbol in p.sizes:
                        index[axis] = slice(0, p.sizes[symbol])
                one[name] = np.ascontiguousarray(part[tuple(index)])
            results.append(one)
            start += p.rows
        return results

    def _run(self, feeds: dict) -> dict:
        return self.program.run(feeds)

    def replica(self) -> "ExportedModel":
        twin = copy.copy(self)
        twin.program = _program_replica(self.program)
        return twin

    def warmup(self) -> None:
        feeds = {}
        for spec in self.inputs:
            shape = [1 if d == -1 else d for d in spec.shape]
            feeds[spec.name] = np.ones(shape, spec.dtype)
        self._run(feeds)


def _program_replica(program):
    """The same exported program (signature, graph, weights: shared, read-only) with its own
    cache of compiled executors and its own lock (Note [Model instances] in batching.py)."""
    from ember.io.export import ExportedProgram

    return ExportedProgram(
        program.signature, program.graph_spec, program.weights, program.cache_size
    )


def _v2(dtype_name: str) -> str:
    from ember.io.export import _dtype

    return datatype_of(_dtype(dtype_name).numpy)


# --- HF folders ------------------------------------------------------------------------------
TASKS = (
    "feature-extraction",
    "sequence-classification",
    "token-classification",
    "question-answering",
    "masked-lm",
)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def infer_task(folder: str, config) -> str:
    """The task of an HF folder: its architectures, else feature extraction."""
    for arch in getattr(config, "architectures", None) or []:
        for suffix, task in (
            ("ForSequenceClassification", "sequence-classification"),
            ("ForTokenClassification", "token-classification"),
            ("ForQuestionAnswering", "question-answering"),
            ("ForMaskedLM", "masked-lm"),
        ):
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


class TextModel(ServedModel):
    """An HF-format folder served with server-side tokenization: input `text` (BYTES, one
    string per row), outputs by task: `embedding` (feature extraction: pooled as the folder's
    sentence-transformers config says, else mean pooling, L2-normalised when it lists a
    Normalize module), `logits`, `label` and `score` (sequence classification), the head's
    per-token outputs otherwise (cropped to the request's own padded length)."""

    platform = "ember_transformers"

    def __init__(self, folder: str, task: str | None = None, max_length: int | None = None):
        from ember.transformers import AutoConfig, AutoTokenizer, auto

        self.folder = folder
        config = AutoConfig.from_pretrained(folder)
        self.task = task or infer_task(folder, config)
        if self.task not in TASKS:
            raise ValueError(f"serve: unknown task {self.task!r}; expected one of {TASKS}")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.max_length = min(
            max_length or getattr(self.tokenizer, "model_max_length", 512) or 512,
            getattr(config, "max_position_embeddings", 512),
        )
        kind = {
            "feature-extraction": "base",
            "sequence-classification": "sequence-classification",
            "token-classification": "token-classification",
            "question-answering": "question-answering",
            "masked-lm": "masked-lm",
        }[self.task]
        model_class = auto.MODEL_MAPPINGS[kind].get(config.model_type)
        if model_class is None:
            raise ValueError(f"serve: no ember model for {config.model_type!r} and {kind}")
        self.model = model_class.from_pretrained(folder).eval()
        self.config = config
        self.pooling, self.normalize = _sentence_transformers_pooling(folder)
        self.program = self._export()
        self.packed_program = self._export_packed() if self._packable() else None
        self.packing = PACKING  # False: pad batches in length groups instead
        hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", -1)
        self.inputs = [TensorSpec("text", "BYTES", [-1])]
        if self.task == "feature-extraction":
            self.outputs = [TensorSpec("embedding", "FP32", [-1, hidden])]
        elif self.task == "sequence-classification":
            n = config.num_labels
            self.outputs = [
                TensorSpec("logits", "FP32", [-1, n]),
                TensorSpec("label", "BYTES", [-1]),
                TensorSpec("score", "FP32", [-1]),
            ]
            self.labels = [config.id2label[i] for i in range(n)]
        else:
            self.outputs = [
                TensorSpec(o["name"], "FP32", o["shape"]) for o in self.program.signature["outputs"]
            ]

    def forward(self, input_ids, attention_mask):
        """The traced function: the head, then pooling for feature extraction."""
        from ember.nn import functional as F

        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.task == "feature-extraction":
            hidden = out.last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                from ember.transformers import mean_pooling

                pooled = mean_pooling(hidden, attention_mask)
            if self.normalize:
                pooled = F.normalize(pooled, p=2, dim=1)
            return {"embedding": pooled}
        if self.task == "sequence-classification":
            return {"logits": out.logits}
        return {k: out[k] for k in out.keys() if out[k] is not None and k != "hidden_states"}

    def _export(self):
        from ember.io.export import export

        ids = np.ones((2, 8), np.int64)
        dims = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        }
        forward = self.forward
        return export(
            lambda input_ids, attention_mask: forward(input_ids, attention_mask),
            {"input_ids": ids, "attention_mask": ids.copy()},
            None,
            dynamic_dims=dims,
            name=os.path.basename(os.path.normpath(self.folder)),
        )

    def _base(self):
        """The encoder whose token states packing reuses (Note [Packed batches])."""
        return self.model if self.task == "feature-extraction" else self.model.bert

    def _packable(self) -> bool:
        """BERT encoders with absolute positions, answering per text (Note [Packed batches])."""
        config = self.config
        if getattr(config, "model_type", None) != "bert":
            return False
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return False
        if self.task == "feature-extraction":
            return True
        model = self.model
        return (
            self.task == "sequence-classification"
            and getattr(config, "problem_type", None) in (None, "single_label_classification")
            and all(hasattr(model, n) for n in ("bert", "dropout", "classifier"))
            and getattr(model.bert, "pooler", None) is not None
        )

    def _export_packed(self):
        from ember.io.export import export

        base = self._base()
        ids = np.ones((2, 8), np.int64)
        mask = np.ones((2, 8, 8), np.int64)
        dims = {
            "input_ids": {0: "rows", 1: "width"},
            "position_ids": {0: "rows", 1: "width"},
            "attention_mask": {0: "rows", 1: "width", 2: "width"},
        }

        def forward(input_ids, position_ids, attention_mask):
            out = base(
                input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
            )
            return {"hidden": out.last_hidden_state}

        return export(
            forward,
            {"input_ids": ids, "position_ids": ids.copy(), "attention_mask": mask},
            None,
            dynamic_dims=dims,
            name=os.path.basename(os.path.normpath(self.folder)) + "-packed",
        )

    def _pack(self, rows: list) -> tuple:
        """Token rows laid end to end (Note [Packed batches]): the program's feeds and, per
        text, (row, start, length)."""
        longest = max(len(r) for r in rows)
        width = max(PACK_WIDTH, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
        used: list = []  # tokens taken in each packed row
        places = [None] * len(rows)
        for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
            n = len(rows[i])
            for r, taken in enumerate(used):
                if taken + n <= width:
                    places[i] = (r, taken, n)
                    used[r] += n
                    break
            else:
                places[i] = (len(used), 0, n)
                used.append(n)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = np.full((len(used), width), pad_id, np.int64)
        positions = np.zeros((len(used), width), np.int64)
        mask = np.zeros((len(used), width, width), np.int64)
        for row, (r, start, n) in zip(rows, places):
            ids[r, start : start + n] = row
            positions[r, start : start + n] = np.arange(n)
            mask[r, start : start + n, start : start + n] = 1
        feeds = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        return feeds, places

    def _forward_packed(self, rows: list) -> dict:
        """Sentence embeddings or logits of many texts in one packed run."""
        feeds, places = self._pack(rows)
        hidden = self.packed_program.run(feeds)["hidden"]
        if self.task == "feature-extraction":
            if self.pooling == "cls":
                pooled = np.stack([hidden[r, start] for r, start, _ in places])
            else:
                pooled = np.stack(
                    [hidden[r, start : start + n].sum(0) / np.float32(n) for r, start, n in places]
                )
            if self.normalize:  # F.normalize: x / max(||x||, 1e-12)
                norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))[:, None]
                pooled = pooled / np.maximum(norms, np.float32(1e-12))
            return {"embedding": pooled.astype(np.float32, copy=False)}
        import ember

        first = np.stack([hidden[r, start] for r, start, _ in places])[:, None, :]
        model = self.model
        with ember.no_grad():
            pooled = model.bert.pooler(ember.Tensor.from_array(first))
            logits = model.classifier(model.dropout(pooled))
        return {"logits": np.ascontiguousarray(logits.numpy(), dtype=np.float32)}

    def prepare(self, feeds: dict) -> Prepared:
        self.check_names(feeds)
        array = _check_datatype(self.inputs[0], feeds["text"])
        if array.ndim != 1:
            raise RequestError(
                f"input 'text': expected shape [-1] (one string per row), got {list(array.shape)}"
            )
        if array.shape[0] == 0:
            raise RequestError("input 'text': needs at least one string")
        texts = []
        for i, x in enumerate(array):
            try:
                texts.append(x.decode("utf-8") if isinstance(x, bytes) else str(x))
            except UnicodeDecodeError:
                raise RequestError(f"input 'text': element {i} is not valid UTF-8") from None
        # tokenized here, on the request's HTTP thread, so the model's workers only run models
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return Prepared({"text": texts, "ids": ids}, len(texts), "text")

    def replica(self) -> "TextModel":
        twin = copy.copy(self)
        twin.program = _program_replica(self.program)
        if self.packed_program is not None:
            twin.packed_program = _program_replica(self.packed_program)
        return twin

    def tokenize(self, texts: list) -> dict:
        """Token ids and attention mask, padded to the longest text rounded up to a multiple
        of 8 (Note [Batching and padding])."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return self._pad(enc["input_ids"])

    def _pad(self, rows: list) -> dict:
        longest = max(len(r) for r in rows)
        length = min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, self.max_length)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = np.full((len(rows), length), pad_id, np.int64)
        mask = np.zeros((len(rows), length), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _groups(self, lengths: list) -> list:
        """Row indices in runs of similar length: a batch of short and long texts runs as a
        few padded blocks rather than one where most tokens are padding. Greedy over the
        sorted lengths: a row joins the current block unless the padding it adds to the
        block costs more than a run of its own (GROUP_COST tokens of per-run overhead)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups, current, width = [], [], 0
        for i in order:
            padded = -(-lengths[i] // PAD_MULTIPLE) * PAD_MULTIPLE
            joined = (len(current) + 1) * padded - len(current) * width
            if current and joined > GROUP_COST + padded:
                groups.append(current)
                current = []
            current.append(i)
            width = padded
        groups.append(current)
        return groups

    def _token_rows(self, prepared: "Prepared") -> list:
        ids = prepared.feeds.get("ids")
        if ids is None:
            text = prepared.feeds["text"]
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        return ids

    def _forward(self, rows: list) -> dict:
        """The head's outputs for every row of token ids, packed (Note [Packed batches]) or
        run in length groups (rows keep their order)."""
        if len(rows) > 1 and self.packed_program is not None and self.packing:
            return self._forward_packed(rows)
        groups = self._groups([len(r) for r in rows]) if len(rows) > 1 else [[0]]
        if len(groups) == 1:
            return self.program.run(self._pad(rows))
        out: dict = {}
        for group in groups:
            part = self.program.run(self._pad([rows[i] for i in group]))
            for name, value in part.items():
                if name not in out:
                    out[name] = np.zeros((len(rows),) + value.shape[1:], value.dtype)
                if value.ndim >= 2 and value.shape[1] != out[name].shape[1]:
                    # per-token outputs: groups have different lengths; keep the longest
                    width = max(value.shape[1], out[name].shape[1])
                    grown = np.zeros((len(rows), width) + value.shape[2:], value.dtype)
                    grown[:, : out[name].shape[1]] = out[name]
                    out[name] = grown
                out[name][group, : value.shape[1]] = value
        return out

    def run_batch(self, batch: list[Prepared]) -> list[dict]:
        out = self._forward([row for p in batch for row in self._token_rows(p)])
        if self.task == "sequence-classification":
            logits = out["logits"]
            shifted = np.exp(logits - logits.max(-1, keepdims=True))
            probs = shifted / shifted.sum(-1, keepdims=True)
            best = probs.argmax(-1)
            out["label"] = np.array([self.labels[i].encode() for i in best], dtype=object)
            out["score"] = probs[np.arange(len(best)), best].astype(np.float32)
        results, start = [], 0
        for p in batch:
            one = {k: np.ascontiguousarray(v[start : start + p.rows]) for k, v in out.items()}
            if len(batch) > 1 and self.task not in (
                "feature-extraction",
                "sequence-classification",
            ):
                own = self._pad(self._token_rows(p))["input_ids"].shape[1]
                one = {
                    k: np.ascontiguousarray(v[:, :own]) if v.ndim >= 2 else v
                    for k, v in one.items()
                }
            results.append(one)
            start += p.rows
        return results

    def classify(self, texts: list) -> list:
        """[(label, score) for every class] per text, for TF Serving's :classify."""
        logits = self.program.run(self.tokenize(texts))["logits"]
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        probs = shifted / shifted.sum(-1, keepdims=True)
        return [[[self.labels[j], float(row[j])] for j in range(len(row))] for row in probs]

    def warmup(self) -> None:
        """Compile and run the shapes short requests and small batches meet first: 1-4 rows
        of up to 8 and up to 16 tokens, and packed batches of short texts up to 32 requests
        (Note [Packed batches])."""
        for words in (1, 12):
            text = " ".join(["warm"] * words)
            for rows in (1, 2, 3, 4):
                self.run_batch([Prepared({"text": [text] * rows}, rows, "text")])
        if self.packed_program is not None:
            for rows in range(1, WARM_PACKED_ROWS + 1):
                ids = [[self.tokenizer.pad_token_id or 0] * PACK_WIDTH] * rows
                self.packed_program.run(self._pack(ids)[0])


def _sentence_transformers_pooling(folder: str) -> tuple[str, bool]:
    modules = _read_json(os.path.join(folder, "modules.json")) or []
    pooling, normalize = "mean", False
    for m in modules if isinstance(modules, list) else []:
        kind = str(m.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            cfg = _read_json(os.path.join(folder, m.get("path", ""), "config.json")) or {}
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
    return pooling, normalize


def folder_kind(folder: str) -> str | None:
    """'exported', 'hf' or None for a folder that holds neither."""
    from ember.io.export import is_exported

    if is_exported(folder):
        return "exported"
    config = _read_json(os.path.join(folder, "config.json"))
    if isinstance(config, dict) and "model_type" in config:
        return "hf"
    return None


def load_model(folder: str, task: str | None = None) -> ServedModel:
    """A served model for an exported-program folder or an HF folder."""
    kind = folder_kind(folder)
    if kind == "exported":
        from ember.io.export import load_exported

        program = load_exported(folder)
        labels = None
        raw = program.metadata.get("labels")
        if raw:
            labels = json.loads(raw)
        return ExportedModel(program, labels)
    if kind == "hf":
        return TextModel(folder, task)
    raise ValueError(
        f"serve: {folder} holds neither an exported program (signature.json) nor an "
        "HF-format model (config.json with model_type)"
    )


def timed(fn, *args):
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start
