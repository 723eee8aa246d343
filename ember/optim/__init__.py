"""L5 `ember.optim`: optimizers (state init plus a pure per-parameter update, Note [Optimizer
structure]) and `ember.optim.lr_scheduler`."""

from ember.optim import lr_scheduler as lr_scheduler
from ember.optim.adadelta import Adadelta as Adadelta
from ember.optim.adagrad import Adagrad as Adagrad
from ember.optim.adam import Adam as Adam
from ember.optim.adam import AdamW as AdamW
from ember.optim.adamax import Adamax as Adamax
from ember.optim.lbfgs import LBFGS as LBFGS
from ember.optim.nadam import NAdam as NAdam
from ember.optim.optimizer import Optimizer as Optimizer
from ember.optim.radam import RAdam as RAdam
from ember.optim.rmsprop import RMSprop as RMSprop
from ember.optim.sgd import SGD as SGD
from ember.optim.sparse_adam import SparseAdam as SparseAdam
