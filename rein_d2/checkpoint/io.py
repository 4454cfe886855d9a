"""Reading checkpoint files without running code from them.

Every weights file rein_d2 opens goes through :func:`read_checkpoint`:
- PyTorch files (zip or legacy) are read with ``torch.load(weights_only=True)``;
- TorchScript archives (OpenAI CLIP), for the converters only, by :func:`read_torchscript`,
  which takes their tensors without running their code;
- ``.pkl`` files (detectron2's model zoo: pickled dicts of numpy arrays) are read by an
  unpickler whose only globals are inert stand-ins for numpy's array and dtype reconstructors
  (:mod:`.numpy_pickle`): plain numeric dtypes only, any other global refused by name;
- anything else (a truncated archive, an image renamed ``.pth``, a pickle that would run
  code) raises :class:`CheckpointFileError` with one line: the path, what the file is, and
  what to do.
"""
import io
import os
import pickle
import re
import zipfile

import torch

from ..utils.cli import UserError
from .numpy_pickle import RefusedPickle, load_model_zoo
from .torchscript import TorchScriptRefused, read_torchscript_tensors

__all__ = ["CheckpointFileError", "read_checkpoint", "require_checkpoint_file", "read_model_zoo_pickle",
           "is_torchscript", "read_torchscript"]


class CheckpointFileError(UserError):
    """A weights file that cannot be used: unreadable, not a checkpoint, or unsafe to load."""


_MAGIC = [(b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive (unpack it first)"),
          (b"<", "an HTML or XML page (a failed download?)"), (b"{", "a JSON/text file")]


def read_model_zoo_pickle(path: str):
    """A detectron2 model-zoo ``.pkl`` (dicts of plain numeric numpy arrays), refusing any
    other global and any array or dtype such files never hold."""
    with open(path, "rb") as f:
        try:
            return load_model_zoo(f)
        except RefusedPickle as e:
            raise CheckpointFileError(
                f"{path}: refused, {e}; rein_d2 reads .pkl files of numpy arrays of plain numbers "
                "(bool, int, uint, float, complex): save the weights with torch.save or "
                "pickle.dump of such arrays") from None
        except pickle.UnpicklingError as e:
            raise _unpickling_error(path, e, "truncated or corrupt pickle") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                RecursionError) as e:
            raise CheckpointFileError(f"{path}: truncated or corrupt pickle ({type(e).__name__}); "
                                      "download or copy the file again") from None


def _unpickling_error(path: str, e: Exception, what: str) -> CheckpointFileError:
    """The refusal of a global (named by the unpickler's message), else ``what`` went wrong."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    if found:
        return _unsafe(path, found.group(1))
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return CheckpointFileError(f"{path}: {what} ({first}); download or copy the file again")


def _unsafe(path: str, global_name: str) -> CheckpointFileError:
    return CheckpointFileError(
        f"{path}: refused, a pickle that would run code (it loads the global {global_name}); "
        "rein_d2 loads weights only: use a file of tensors saved by torch.save(state_dict), or "
        "numpy arrays for a .pkl")


def is_torchscript(data: bytes) -> bool:
    """A TorchScript archive (e.g. OpenAI CLIP's ViT-L-14.pt): a zip with a code/ folder."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return any("/code/" in n or n.startswith("code/") for n in z.namelist())


def read_torchscript(path: str, data: bytes):
    """{name: tensor} of the TorchScript archive ``path`` (bytes ``data``), read without running
    its code (:mod:`.torchscript`)."""
    try:
        return read_torchscript_tensors(data)
    except TorchScriptRefused as e:
        raise CheckpointFileError(
            f"{path}: refused, a TorchScript archive holding {e}; rein_d2 reads only the tensors "
            "of plain modules (as in OpenAI CLIP's .pt): convert such an archive with "
            "torch.save(module.state_dict()) where you trust it") from None
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, e, "corrupt TorchScript archive") from None
    except (zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RecursionError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointFileError(f"{path}: truncated or corrupt TorchScript archive ({first}); "
                                  "download or copy the file again") from None


def _what_is(head: bytes) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return f"a file of unknown kind (it starts with {head!r})"


def require_checkpoint_file(path: str) -> None:
    """Refuse a URL (nothing is downloaded at run time) or a path that is not a file."""
    if "://" in path:
        raise CheckpointFileError(f"{path}: a URL; rein_d2 downloads nothing at run time: "
                                  "download the file and give its local path")
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{path}: no such checkpoint file; check the path (relative "
                                  f"paths start from {os.getcwd()})")


def read_checkpoint(path: str, data: bytes = None):
    """The object a checkpoint file holds, read without running code from it.

    ``data`` is the file's bytes when the caller has read them already."""
    require_checkpoint_file(path)
    if path.endswith(".pkl"):
        return read_model_zoo_pickle(path)
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    if not data:
        raise CheckpointFileError(f"{path}: empty file; download or copy it again")
    if data[:2] != b"PK" and data[:1] != b"\x80":  # neither torch's zip nor its legacy pickle
        what = _what_is(data[:8])
        raise CheckpointFileError(f"{path}: {what}, not a checkpoint; give a .pth weights file")
    if is_torchscript(data):
        raise CheckpointFileError(
            f"{path}: a TorchScript program, not a state dict; convert it first with "
            "tools/convert_pretrained.py (OpenAI CLIP's ViT-L-14.pt is one)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, e, "corrupt checkpoint") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).split(". ")[0].splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointFileError(f"{path}: truncated or corrupt archive ({first}); download "
                                  "or copy the file again") from None
