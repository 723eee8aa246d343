"""Wire formats of the two REST protocols: KServe V2 (Open Inference) tensors, JSON and binary,
and TF Serving's row / columnar JSON. Pure functions from bytes and dicts to NumPy arrays and
back; every malformed input raises `RequestError` with the 4xx status and a message that
names the field, what was expected and what came.

Note [Binary tensor data]: a KServe V2 request with the binary extension is the JSON header
(its length in the `Inference-Header-Content-Length` HTTP header) followed by the raw bytes of
each input that says `"parameters": {"binary_data_size": n}`, in the order of the inputs,
little-endian, C order. BYTES elements are each a 4-byte little-endian length then the bytes.
The sizes must add up to the body exactly. A response carries binary outputs the same way
when the request asks for it (`"binary_data_output": true` in the request's parameters, or
`"binary_data": true` in an output's parameters); tritonclient sends inputs in binary and asks
for binary outputs by default.

Note [Float32 JSON]: a JSON response (KServe V2's flat `data`, TF Serving's nested
`predictions` / `outputs`) writes each float32 element as the shortest decimal that
reads back as the same float32 (NumPy's `str(np.float32(x))` digits), not `json.dumps` of
`tolist()`, which writes the float64 that equals it with up to 17 digits: a MiniLM sentence
embedding (384 floats) took 230 us of the connection thread's time (holding the GIL the model
workers need) and 8.4 kB that way, against 30 us and 4.7 kB here. `float32_json` runs a numba
kernel: for p = 1..9 significant digits it rounds x to p digits (an integer d times 10^q, in
float64), computes d * 10^q or d / 10^-q as one correctly rounded float64 operation (d < 2^53
and 10^|q| <= 10^22 are exact), and keeps the first p whose float64 rounds to x as float32.
That is what a reader does (JSON parsers read a float64; NumPy and tritonclient then cast to
float32), so every element round-trips exactly by construction, and 9 digits always do. The
layout follows Python's float repr: positional for decimal exponents -4..15 ("0.02634161",
"123.0"), else scientific ("1e-05", "1.5e+16"). Arrays the kernel does not write (NaN or
infinity, magnitudes whose 10^|q| is inexact: below ~1e-13 or above 1e22) and every array
when numba is absent go through `json.dumps` as before: the same values, longer text.
tests/serve/test_serve.py checks the round trip on random bit patterns both ways (via
float64 and parsed straight to float32) and the digits against NumPy's shortest repr.
"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np

# KServe V2 datatype <-> NumPy dtype
DATATYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items() if k != "BYTES"}

# TF Serving's DataType names for the metadata endpoint
TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


class RequestError(Exception):
    """A request the server refuses: `status` (4xx, or 503) and a message for `{"error": ...}`."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def datatype_of(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in "SUO":
        return "BYTES"
    return _BY_DTYPE[dtype]


# --- KServe V2 -------------------------------------------------------------------------------
def _shape(value, where: str) -> list:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise RequestError(f"{where}: 'shape' must be a list of non-negative ints, got {value!r}")
    return value


def _flatten_json(data, where: str) -> list:
    """Row-major flattening of nested JSON lists (KServe allows flat or nested data)."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        if any(isinstance(x, list) for x in data):
            raise RequestError(f"{where}: 'data' nests lists unevenly")
        return data
    out: list = []
    for x in data:
        out.extend(_flatten_json(x, where))
    return out


def bytes_element(x, where: str) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, dict) and set(x) == {"b64"} and isinstance(x["b64"], str):
        try:
            return base64.b64decode(x["b64"], validate=True)
        except ValueError:
            raise RequestError(f"{where}: 'b64' is not valid base64") from None
    raise RequestError(f"{where}: BYTES elements must be strings, got {type(x).__name__}")


def decode_bytes_tensor(raw: memoryview, count: int, where: str) -> np.ndarray:
    """`count` BYTES elements from the binary extension's length-prefixed layout."""
    out = np.empty(count, dtype=object)
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + 4 > end:
            raise RequestError(
                f"{where}: binary BYTES data ends after {i} of {count} elements (each element "
                "is a 4-byte little-endian length, then its bytes)"
            )
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise RequestError(f"{where}: BYTES element {i} says {n} bytes but {end - pos} remain")
        out[i] = bytes(raw[pos : pos + n])
        pos += n
    if pos != end:
        raise RequestError(
            f"{where}: binary BYTES data has {end - pos} bytes left after {count} elements"
        )
    return out


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for x in array.reshape(-1):
        b = x if isinstance(x, bytes) else str(x).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def parse_v2_request(body: bytes, header_length: str | None) -> tuple[dict, dict]:
    """The request JSON and its inputs as {name: np.ndarray} (BYTES as object arrays of
    bytes), for JSON or binary bodies (Note [Binary tensor data])."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if not 0 <= n <= len(body):
            raise RequestError(
                f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes"
            )
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"malformed JSON in the request body: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(request).__name__}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("the request needs 'inputs': a non-empty list of tensors")
    feeds: dict = {}
    pos = 0
    for k, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise RequestError(f"inputs[{k}] must be an object with a string 'name'")
        name = spec["name"]
        where = f"input {name!r}"
        if name in feeds:
            raise RequestError(f"{where} is given twice")
        shape = _shape(spec.get("shape"), where)
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise RequestError(
                f"{where}: unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}"
            )
        count = int(np.prod(shape, dtype=np.int64))
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(f"{where}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(f"{where}: binary_data_size must be a non-negative int")
            if "data" in spec:
                raise RequestError(f"{where}: has both 'data' and binary_data_size")
            if pos + size > len(binary):
                raise RequestError(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - pos} binary bytes remain)"
                )
            raw = binary[pos : pos + size]
            pos += size
            if datatype == "BYTES":
                array = decode_bytes_tensor(raw, count, where)
            else:
                dtype = DATATYPES[datatype]
                if size != count * dtype.itemsize:
                    raise RequestError(
                        f"{where}: binary_data_size is {size} bytes but shape {shape} of "
                        f"{datatype} needs {count * dtype.itemsize}"
                    )
                array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        else:
            if "data" not in spec:
                raise RequestError(f"{where}: needs 'data' (or binary_data_size in parameters)")
            flat = _flatten_json(spec["data"], where)
            if len(flat) != count:
                raise RequestError(
                    f"{where}: shape {shape} needs {count} elements, 'data' has {len(flat)}"
                )
            if datatype == "BYTES":
                array = np.empty(count, dtype=object)
                for i, x in enumerate(flat):
                    array[i] = bytes_element(x, where)
            else:
                array = _numbers(flat, DATATYPES[datatype], where, datatype)
        feeds[name] = array.reshape(shape)
    if pos != len(binary):
        raise RequestError(
            f"the body has {len(binary) - pos} binary bytes that no input's binary_data_size "
            "accounts for"
        )
    return request, feeds


def _numbers(flat: list, dtype: np.dtype, where: str, datatype: str) -> np.ndarray:
    is_bool = dtype.kind == "b"
    kinds = (bool,) if is_bool else (int, float) if dtype.kind == "f" else (int,)
    for x in flat:
        if not isinstance(x, kinds) or (not is_bool and isinstance(x, bool)):
            raise RequestError(
                f"{where}: {datatype} data must hold "
                + ("true/false" if is_bool else "numbers" if dtype.kind == "f" else "ints")
                + f", got {json.dumps(x)[:40]}"
            )
    try:
        return np.array(flat, dtype=dtype)
    except (OverflowError, ValueError) as e:
        raise RequestError(f"{where}: data does not fit {datatype}: {e}") from None


def requested_outputs(request: dict, names: list) -> list[tuple[str, bool | None]]:
    """(name, binary or None for the default) for each output the request asks for."""
    asked = request.get("outputs")
    if asked is None:
        return [(n, None) for n in names]
    if not isinstance(asked, list):
        raise RequestError("'outputs' must be a list of objects with a 'name'")
    out = []
    for k, spec in enumerate(asked):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise RequestError(f"outputs[{k}] must be an object with a string 'name'")
        if spec["name"] not in names:
            raise RequestError(f"unknown output {spec['name']!r}; the model has outputs {names}")
        binary = (spec.get("parameters") or {}).get("binary_data")
        out.append((spec["name"], None if binary is None else bool(binary)))
    return out


def _json_value(array: np.ndarray) -> list:
    if array.dtype == object:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array]
    return array.reshape(-1).tolist()


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def build_v2_response(
    model_name: str, version: str, request: dict, outputs: dict, default_binary: bool
) -> tuple[bytes, dict]:
    """(body, extra headers) of a KServe V2 infer response."""
    params = request.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", default_binary))
    chosen = requested_outputs(request, list(outputs))
    tensors, chunks = [], []
    for name, binary in chosen:
        array = outputs[name]
        entry = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary if binary is not None else binary_default:
            raw = (
                encode_bytes_tensor(array)
                if array.dtype == object
                else np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
            tensors.append(_dumps(entry))
            continue
        data = float32_json(array) if array.dtype == np.float32 else None
        if data is None:
            entry["data"] = _json_value(array)
            tensors.append(_dumps(entry))
        else:  # the shortest float32 decimals (Note [Float32 JSON])
            tensors.append(_dumps(entry)[:-1] + b',"data":' + data + b"}")
    response = {"model_name": model_name, "model_version": version}
    head = _dumps(response)[:-1] + b',"outputs":[' + b",".join(tensors) + b"]"
    head += (b',"id":' + _dumps(request["id"]) if "id" in request else b"") + b"}"
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


# --- float32 arrays as JSON (Note [Float32 JSON]) --------------------------------------------
_FLOAT32_JSON_SOURCE = """
_POW10 = np.array([1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                   1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22])


def float32_json(values, blocks, out):
    pos = 0
    digits = np.empty(12, np.uint8)
    for i in range(values.size):
        x = values[i]
        if i:
            closed = 0  # the nested lists that end before element i: one per block it starts
            for b in blocks:
                if i % b == 0:
                    closed += 1
            for j in range(closed):
                out[pos] = 93  # ']'
                pos += 1
            out[pos] = 44  # ','
            pos += 1
            for j in range(closed):
                out[pos] = 91  # '['
                pos += 1
        xd = np.float64(x)
        if xd != xd or xd == math.inf or xd == -math.inf:
            return -1 - i
        if xd < 0 or (xd == 0 and math.copysign(1.0, xd) < 0):
            out[pos] = 45  # '-'
            pos += 1
        a = abs(xd)
        if a == 0:
            out[pos] = 48
            out[pos + 1] = 46
            out[pos + 2] = 48
            pos += 3
            continue
        k = int(math.floor(math.log10(a)))
        d = 0
        q = 0
        found = False
        for p in range(1, 10):
            q = k - p + 1
            if q > 22 or q < -22:
                return -1 - i
            if q >= 0:
                d = math.floor(a / _POW10[q] + 0.5)
                y = d * _POW10[q]
            else:
                d = math.floor(a * _POW10[-q] + 0.5)
                y = d / _POW10[-q]
            if np.float32(y) == abs(x):
                found = True
                break
        if not found:
            return -1 - i
        n = np.int64(d)
        while n % 10 == 0:
            n //= 10
            q += 1
        nd = 0
        while n > 0:
            digits[nd] = 48 + n % 10
            n //= 10
            nd += 1
        # digits[nd - 1] is the leading digit
        e = q + nd - 1
        if -4 <= e < 16:
            if q >= 0:
                for j in range(nd - 1, -1, -1):
                    out[pos] = digits[j]
                    pos += 1
                for j in range(q):
                    out[pos] = 48
                    pos += 1
                out[pos] = 46
                out[pos + 1] = 48
                pos += 2
            elif e >= 0:
                for j in range(nd - 1, -1, -1):
                    if j == -q - 1:
                        out[pos] = 46
                        pos += 1
                    out[pos] = digits[j]
                    pos += 1
            else:
                out[pos] = 48
                out[pos + 1] = 46
                pos += 2
                for j in range(-e - 1):
                    out[pos] = 48
                    pos += 1
                for j in range(nd - 1, -1, -1):
                    out[pos] = digits[j]
                    pos += 1
        else:
            out[pos] = digits[nd - 1]
            pos += 1
            if nd > 1:
                out[pos] = 46
                pos += 1
                for j in range(nd - 2, -1, -1):
                    out[pos] = digits[j]
                    pos += 1
            out[pos] = 101  # 'e'
            out[pos + 1] = 45 if e < 0 else 43
            pos += 2
            m = abs(e)
            if m >= 10:
                out[pos] = 48 + m // 10
                pos += 1
            else:
                out[pos] = 48
                pos += 1
            out[pos] = 48 + m % 10
            pos += 1
    return pos
"""


def float32_json(array: np.ndarray, nested: bool = False) -> bytes | None:
    """The elements of a float32 array as JSON with the shortest decimals that read back as
    the same float32s (Note [Float32 JSON]): one flat list in C order (KServe V2's `data`), or
    with `nested=True` the nested lists of `array.tolist()` (TF Serving; a 0-d array is one
    number). None where the kernel does not apply (no numba, NaN or infinity, extreme
    magnitudes, no elements)."""
    from ember.backend import numba_kernels

    kernel = numba_kernels.jit_source(_FLOAT32_JSON_SOURCE, "float32_json")  # cached
    if kernel is None or array.size == 0:
        return None
    flat = np.ascontiguousarray(array, np.float32).reshape(-1)
    depth = array.ndim if nested else 1
    # element counts of the nested lists below the outermost: a list ends where one starts
    blocks = np.cumprod(array.shape[:0:-1], dtype=np.int64) if nested else np.empty(0, np.int64)
    brackets = 2 * sum(flat.size // int(b) for b in blocks)
    out = np.empty(flat.size * 17 + brackets + 1, np.uint8)  # '-', 9 digits, '.', 'e-xx', ','
    n = kernel(flat, blocks, out)
    if n < 0:
        return None
    return b"[" * depth + out[:n].tobytes() + b"]" * depth


def warm_float32_json() -> None:
    """Compile (or load from the disk cache) the float32 writer, e.g. at model warm-up."""
    float32_json(np.zeros(1, np.float32))


# --- TF Serving REST -------------------------------------------------------------------------
def _tf_value(x, where: str):
    """TF Serving JSON: strings may come as {"b64": ...}."""
    if isinstance(x, dict) and set(x) == {"b64"}:
        return bytes_element(x, where)
    if isinstance(x, list):
        return [_tf_value(v, where) for v in x]
    return x


def tf_array(value, spec, where: str) -> np.ndarray:
    """A TF Serving JSON value as an array of the model input's dtype (`spec`: TensorSpec)."""
    value = _tf_value(value, where)
    if spec.datatype == "BYTES":
        shape, probe = [], value
        while isinstance(probe, list):
            shape.append(len(probe))
            probe = probe[0] if probe else None
        flat = _flatten_json(value, where) if isinstance(value, list) else [value]
        if len(flat) != int(np.prod(shape, dtype=np.int64)):
            raise RequestError(f"{where}: nested lists of uneven lengths")
        array = np.empty(len(flat), dtype=object)
        for i, x in enumerate(flat):
            array[i] = bytes_element(x, where)
        return array.reshape(shape)
    try:
        array = np.asarray(value)
    except ValueError:
        raise RequestError(f"{where}: nested lists of uneven lengths") from None
    if array.dtype == object or array.dtype.kind in "SU":
        raise RequestError(f"{where}: expected numbers for {spec.datatype}, got {str(value)[:40]}")
    if spec.dtype.kind in "iub" and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise RequestError(f"{where}: expected integers for {spec.datatype}, got fractions")
    return array.astype(spec.dtype)


def parse_tf_predict(request, inputs: list) -> tuple[dict, str]:
    """{input name: array} from a :predict body, and its format ('row' or 'columnar')."""
    if not isinstance(request, dict):
        raise RequestError("the :predict body must be a JSON object")
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(
            "the :predict body needs exactly one of 'instances' (row format) or 'inputs' "
            "(columnar format)"
        )
    names = [s.name for s in inputs]
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError("'instances' must be a non-empty list")
        if len(inputs) == 1 and not all(isinstance(r, dict) and names[0] in r for r in rows):
            columns = {names[0]: rows}
        else:
            columns = {}
            for i, r in enumerate(rows):
                if not isinstance(r, dict):
                    raise RequestError(
                        f"instances[{i}]: the model has inputs {names}; each instance must be "
                        "an object with one value per input"
                    )
                if set(r) != set(names):
                    raise RequestError(
                        f"instances[{i}]: has inputs {sorted(r)}, expected {sorted(names)}"
                    )
                for n in names:
                    columns.setdefault(n, []).append(r[n])
        fmt = "row"
    else:
        value = request["inputs"]
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise RequestError(f"unknown input {unknown[0]!r}; the model has inputs {names}")
            columns = value
        elif len(inputs) == 1:
            columns = {names[0]: value}
        else:
            raise RequestError(f"'inputs' must be an object keyed by input name ({names})")
        fmt = "columnar"
    feeds = {}
    for spec in inputs:
        if spec.name not in columns:
            raise RequestError(f"missing input {spec.name!r}; the model has inputs {names}")
        feeds[spec.name] = tf_array(columns[spec.name], spec, f"input {spec.name!r}")
    return feeds, fmt


def _tf_json(array: np.ndarray) -> bytes:
    """An output array as TF Serving JSON (nested lists); float32 with the shortest decimals
    that read back exactly (Note [Float32 JSON])."""
    if array.dtype == np.float32:
        data = float32_json(array, nested=True)
        if data is not None:
            return data
    if array.dtype == object:
        flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in array.ravel()]
        return _dumps(np.array(flat, dtype=object).reshape(array.shape).tolist())
    return _dumps(array.tolist())


def build_tf_predict(outputs: dict, fmt: str) -> bytes:
    """The JSON body of a TF Serving :predict response: row format ('predictions': one entry
    per instance, an object of outputs when there are several) or columnar ('outputs')."""
    names = list(outputs)
    if fmt == "row" and len(names) > 1:
        n = len(outputs[names[0]])
        keys = [_dumps(k) + b":" for k in names]
        rows = [
            b"{"
            + b",".join(key + _tf_json(outputs[k][i, ...]) for key, k in zip(keys, names))
            + b"}"
            for i in range(n)
        ]
        return b'{"predictions":[' + b",".join(rows) + b"]}"
    field = b'{"predictions":' if fmt == "row" else b'{"outputs":'
    if len(names) == 1:
        return field + _tf_json(outputs[names[0]]) + b"}"
    columns = b",".join(_dumps(k) + b":" + _tf_json(v) for k, v in outputs.items())
    return field + b"{" + columns + b"}}"
