"""The tensors of a TorchScript archive (OpenAI CLIP's ``ViT-L-14.pt``), read without loading it.

``torch.jit.load`` runs code from the archive (a class's ``__setstate__`` is TorchScript taken
from the file), so it is never called. An archive is a zip holding ``<name>/data.pkl``, a pickle
of the module tree, and the tensors' raw storages under ``<name>/data/``. Here ``data.pkl`` is
read by an unpickler that turns every ``__torch__`` class into an inert record of its attributes
and rebuilds tensors from the storages; its only other globals are torch's storage types and
tensor rebuild (reimplemented here, bounds checked) and ``OrderedDict``. The archive's code
(``code/``) and ``constants.pkl`` are never read.
"""
import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from typing import Dict

import torch

__all__ = ["TorchScriptRefused", "read_torchscript_tensors"]

_STORAGE_DTYPES = {f"{name}Storage": dtype for name, dtype in (
    ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16),
    ("BFloat16", torch.bfloat16), ("Long", torch.int64), ("Int", torch.int32),
    ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8), ("Bool", torch.bool),
    ("ComplexFloat", torch.complex64), ("ComplexDouble", torch.complex128))}


class TorchScriptRefused(pickle.UnpicklingError):
    """What the archive holds that a module of parameters and buffers never does."""


class _ScriptObject:
    """An instance of one of the archive's TorchScript classes: its saved state, nothing run."""
    qualname = "?"
    state = None

    def __setstate__(self, state):  # BUILD: kept as data, never passed to the class's code
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for a storage read here: a view, checked to lie inside it."""
    if not isinstance(storage, _Storage):
        raise TorchScriptRefused(f"a tensor over a {type(storage).__name__}, not a storage of the archive")
    ints = lambda t: isinstance(t, tuple) and all(isinstance(n, int) for n in t)  # noqa: E731
    if not (isinstance(offset, int) and ints(size) and ints(stride) and len(size) == len(stride)):
        raise TorchScriptRefused("a tensor with a malformed size, stride or offset")
    try:  # as_strided refuses negative sizes or strides and views beyond the storage
        return torch.as_strided(storage.flat, size, stride, offset)
    except RuntimeError as e:
        raise TorchScriptRefused(f"a tensor outside its storage ({str(e).splitlines()[0]})") from None


class _Storage:
    def __init__(self, flat: torch.Tensor):
        self.flat = flat


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data_pkl: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data_pkl))
        self.archive, self.prefix, self.storages, self.classes = archive, prefix, {}, {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:  # NEWOBJ needs a class: one inert class per name
                self.classes[qualname] = type("ScriptObject", (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")

    def persistent_load(self, pid):
        """('storage', dtype, key, location, numel): the raw bytes of ``data/<key>``."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchScriptRefused(f"a persistent id {str(pid)[:80]}, not a storage")
        _, dtype, key, _, numel = pid
        if not (isinstance(dtype, torch.dtype) and isinstance(key, str) and re.fullmatch(r"\w+", key)
                and isinstance(numel, int) and numel >= 0):
            raise TorchScriptRefused(f"a malformed storage reference {str(pid)[:80]}")
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            try:
                info = self.archive.getinfo(name)
            except KeyError:
                raise ValueError(f"no storage {name}") from None
            if info.file_size < nbytes:
                raise ValueError(f"storage {name} of {info.file_size} bytes, not {nbytes}")
            raw = bytearray(self.archive.read(name)[:nbytes])
            flat = torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            self.storages[key] = _Storage(flat)
        return self.storages[key]


def _named_tensors(obj: _ScriptObject, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    """The tensors among ``obj``'s attributes and (recursively) its submodules', named as
    ``state_dict`` names them. A module's attributes are saved as a dict; any other state
    means the class saved itself with its own code, which only that code could read."""
    if not isinstance(obj.state, dict) or not all(isinstance(k, str) for k in obj.state):
        raise TorchScriptRefused(f"an object of class {obj.qualname} saved by its own __getstate__ code "
                       "(loading it would run the archive's __setstate__)")
    for name, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _named_tensors(value, f"{prefix}{name}.", out)


def read_torchscript_tensors(data: bytes) -> Dict[str, torch.Tensor]:
    """{dotted attribute name: tensor} of every tensor in a TorchScript archive's module tree,
    in ``state_dict`` order, with the archive's dtypes. Raises TorchScriptRefused (what such
    modules never hold), pickle.UnpicklingError ("GLOBAL module.name" for a global outside the
    few above) or ValueError and the like (a corrupt archive)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        found = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(found) != 1:
            raise ValueError(f"{len(found)} <name>/data.pkl entries instead of one")
        prefix = found[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist():
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order != sys.byteorder:
                raise TorchScriptRefused(f"an archive written on a {order}-endian machine")
        root = _ArchiveUnpickler(archive.read(found[0]), archive, prefix).load()
    if not isinstance(root, _ScriptObject):
        raise ValueError(f"data.pkl holds a {type(root).__name__}, not a module")
    out: Dict[str, torch.Tensor] = {}
    _named_tensors(root, "", out)
    return out
