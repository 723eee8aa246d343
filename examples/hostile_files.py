"""Hostile files and bad input (issue 19): what ember refuses, and how it says so.

Runs on bundled data where a real file helps (scikit-learn's photo for the image limit) and
on files it writes to a temporary folder. Each line prints what happened.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sysconfig
import tempfile

import ember
from ember import nn


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this should never print",))


def _show(title: str, call) -> None:
    try:
        result = call()
        print(f"{title}: ok -> {result}")
    except Exception as error:  # noqa: BLE001 - the demo prints every refusal
        print(f"{title}: {type(error).__name__}: {str(error).splitlines()[0][:150]}")


def main() -> None:
    folder = tempfile.mkdtemp()
    # 1. a safetensors header of 640 bytes starts with 0x80, a pickle's first byte
    path = os.path.join(folder, "four_layers.safetensors")
    ember.save(nn.Sequential(*[nn.Linear(1, 1)] * 4).state_dict(), path)
    _show("sniff a 640-byte header", lambda: ember.io.sniff_file(path))
    _show("load it back", lambda: sorted(ember.load(path))[:2])
    # 3/4. pickles: refused, then restricted, never run
    evil = os.path.join(folder, "evil.pkl")
    with open(evil, "wb") as f:
        pickle.dump({"w": _Payload()}, f)
    _show("load a planted pickle", lambda: ember.load(evil))
    _show("... with allow_pickle=True", lambda: ember.load(evil, allow_pickle=True))
    # 2. a JPEG that claims 65000 x 65000 pixels
    photo = os.path.join(sysconfig.get_paths()["purelib"], "sklearn", "datasets", "images")
    photo = os.path.join(photo, "china.jpg")
    if os.path.exists(photo):
        from PIL import Image

        buffer = io.BytesIO()
        Image.open(photo).resize((32, 24)).save(buffer, "JPEG")
        data = bytearray(buffer.getvalue())
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
        _show(f"decode a {len(data)}-byte JPEG bomb", lambda: ember.image.decode_jpeg(bytes(data)))
    # 5/6. numerics and arguments
    x = ember.tensor([0.0, 0.0], requires_grad=True)
    x.norm().backward()
    _show("gradient of norm at zero", lambda: x.grad.tolist())
    half = ember.full((4096,), 20.0, dtype=ember.float16)
    _show("float16 mean of 4096 x 20", lambda: half.mean().item())
    _show("embedding index -1", lambda: nn.Embedding(3, 2)(ember.tensor([-1])))
    _show("integer // 0", lambda: ember.tensor([4]) // 0)
    _show("nn.Linear(3.5, 4)", lambda: nn.Linear(3.5, 4))
    # 9. a folder saved by save_pretrained is all old or all new after a crash
    from ember.transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    model_dir = os.path.join(folder, "model")
    BertModel(config).save_pretrained(model_dir)
    _show("files after save_pretrained", lambda: sorted(os.listdir(model_dir)))
    # 11. config.json with a wrong type
    with open(os.path.join(model_dir, "config.json")) as f:
        text = f.read().replace('"hidden_size": 8', '"hidden_size": "8"')
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        f.write(text)
    _show("config.json hidden_size '8'", lambda: BertModel.from_pretrained(model_dir))


if __name__ == "__main__":
    main()
