"""L9 `ember.serve`: a model server for the KServe V2 (Open Inference) and TF Serving REST
protocols, with dynamic batching.

`ember serve PATH` (ember/cli.py) or `ember.serve.Server(PATH).start()` serves an exported
program (`ember.export`), an HF-format model folder (text in, tokenized server-side) or a
model repository ROOT/<model>/<version>/. Files: `server.py` (HTTP front, routes, shutdown),
`protocol.py` (wire formats), `models.py` (what runs), `batching.py` (the dynamic batcher),
`repository.py` (versions, policies, labels), `metrics.py` (Prometheus text).
"""

from ember.serve.batching import Batcher as Batcher
from ember.serve.models import ExportedModel as ExportedModel
from ember.serve.models import TextModel as TextModel
from ember.serve.models import load_model as load_model
from ember.serve.protocol import RequestError as RequestError
from ember.serve.repository import ModelRepository as ModelRepository
from ember.serve.server import Server as Server
