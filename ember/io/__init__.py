"""L5: reading and writing files: safetensors (ember's own reader and writer, no extra
package), checkpoints (`save`/`load`: tensors in safetensors, the rest as JSON, never pickle
unless asked) and atomic writes.

Note for the lead: `ember/io/files.py` (`read_file`/`write_file`, another engineer's part) is
not on this branch; once it lands, re-export it here:
    from ember.io.files import read_file as read_file, write_file as write_file
"""

from ember.io.atomic import atomic_folder as atomic_folder
from ember.io.atomic import atomic_write as atomic_write
from ember.io.atomic import recover_folder as recover_folder
from ember.io.atomic import fsync_dir as fsync_dir
from ember.io.atomic import save_folder as save_folder
from ember.io.checkpoint import (
    PickleRefusedError as PickleRefusedError,
)
from ember.io.checkpoint import (
    load as load,
)
from ember.io.checkpoint import (
    save as save,
)
from ember.io.hub import resolve_pretrained_folder as resolve_pretrained_folder
from ember.io.safetensors import (
    SafetensorsError as SafetensorsError,
)
from ember.io.safetensors import (
    deserialize as deserialize,
)
from ember.io.safetensors import (
    load_file as load_file,
)
from ember.io.safetensors import (
    read_metadata as read_metadata,
)
from ember.io.safetensors import (
    safe_open as safe_open,
)
from ember.io.safetensors import (
    save_file as save_file,
)
from ember.io.safetensors import (
    serialize as serialize,
)
from ember.io.files import read_file as read_file, write_file as write_file
from ember.io.formats import UnsafePickleError as UnsafePickleError
from ember.io.formats import sniff as sniff
from ember.io.formats import sniff_file as sniff_file
