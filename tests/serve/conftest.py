"""A model repository for the server tests, built once per session in a temporary folder:
- minilm/     a link to the bundled MiniLM folder (HF folder, sentence embeddings)
- sentiment/1 a tiny BERT sequence classifier (random weights, MiniLM's tokenizer)
- mlp/1..3    exported MLPs; serving.json: latest two versions, labels stable -> 2, canary -> 3
- tokens/1    an exported tiny BERT over token ids with an attention mask (padded batching)
and helpers to talk HTTP to a server with urllib (loopback only).
"""

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

import ember
from ember.nn import functional as F

TOKEN_DIMS = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}


def make_mlp(seed: int):
    ember.manual_seed(seed)
    return ember.nn.Sequential(ember.nn.Linear(4, 8), ember.nn.Tanh(), ember.nn.Linear(8, 3)).eval()


def tiny_bert_config(**extra):
    from ember.transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
        **extra,
    )


def token_model():
    from ember.transformers import BertModel

    ember.manual_seed(1)
    bert = BertModel(tiny_bert_config()).eval()

    def embed(input_ids, attention_mask):
        hidden = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = ember.transformers.mean_pooling(hidden, attention_mask)
        return {"embedding": F.normalize(pooled, p=2, dim=1)}

    return embed


def build_repository(root: str, minilm: str) -> None:
    from ember.transformers import AutoTokenizer, BertForSequenceClassification

    os.makedirs(root, exist_ok=True)
    os.symlink(minilm, os.path.join(root, "minilm"))
    ember.manual_seed(2)
    config = tiny_bert_config(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    classifier = BertForSequenceClassification(config).eval()
    folder = os.path.join(root, "sentiment", "1")
    classifier.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    for version in (1, 2, 3):
        ember.export(
            make_mlp(version),
            (ember.ones(2, 4),),
            os.path.join(root, "mlp", str(version)),
            metadata={"labels": json.dumps(["a", "b", "c"])},
        )
    with open(os.path.join(root, "mlp", "serving.json"), "w") as f:
        json.dump(
            {
                "version_policy": {"latest": {"num_versions": 2}},
                "version_labels": {"stable": 2, "canary": 3},
            },
            f,
        )
    ids = np.ones((2, 5), np.int64)
    ember.export(
        token_model(),
        {"input_ids": ids, "attention_mask": ids.copy()},
        os.path.join(root, "tokens", "1"),
        dynamic_dims=TOKEN_DIMS,
    )


@pytest.fixture(scope="session")
def repository(tmp_path_factory, minilm):
    root = str(tmp_path_factory.mktemp("serve") / "models")
    build_repository(root, minilm)
    return root


@pytest.fixture(scope="package")  # stopped after tests/serve: it sets ember's thread count
def server(repository):
    from ember.serve import Server

    pytest.importorskip("tokenizers")
    srv = Server(repository, port=0, max_batch_size=8, max_body_bytes=1 << 20, access_log=None)
    srv.start()
    yield srv
    srv.stop(grace=10)


def http(url: str, body=None, headers=None, method=None, timeout=30):
    """(status, headers, parsed JSON or raw bytes) for one request."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, dict(e.headers), e.read()
    if head.get("Content-Type", "").startswith("application/json"):
        return status, head, json.loads(raw)
    return status, head, raw
