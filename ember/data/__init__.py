"""L5: input pipelines in two styles over one engine.

The PyTorch style: `Dataset` -> `Sampler` -> `collate` -> `DataLoader` (worker processes,
shared-memory batches). The tf.data style: `Pipeline.from_tensor_slices(...).map(...)
.batch(...).prefetch(...)`. Either can feed the other.
"""

from ember.data._worker import WorkerInfo as WorkerInfo
from ember.data._worker import get_worker_info as get_worker_info
from ember.data.collate import collate as collate
from ember.data.collate import default_collate as default_collate
from ember.data.collate import default_convert as default_convert
from ember.data.dataloader import DataLoader as DataLoader
from ember.data.dataset import ChainDataset as ChainDataset
from ember.data.dataset import ConcatDataset as ConcatDataset
from ember.data.dataset import Dataset as Dataset
from ember.data.dataset import IterableDataset as IterableDataset
from ember.data.dataset import StringArray as StringArray
from ember.data.dataset import Subset as Subset
from ember.data.dataset import TensorDataset as TensorDataset
from ember.data.dataset import random_split as random_split
from ember.data.pipeline import AUTOTUNE as AUTOTUNE
from ember.data.pipeline import Pipeline as Pipeline
from ember.data.sampler import BatchSampler as BatchSampler
from ember.data.sampler import DistributedSampler as DistributedSampler
from ember.data.sampler import RandomSampler as RandomSampler
from ember.data.sampler import Sampler as Sampler
from ember.data.sampler import SequentialSampler as SequentialSampler
from ember.data.sampler import SubsetRandomSampler as SubsetRandomSampler
from ember.data.sampler import WeightedRandomSampler as WeightedRandomSampler
