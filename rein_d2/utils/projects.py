"""Configs of a project (``projects/<Name>/configs/...``) name the datasets, backbones and keys
that the project's package registers on import. rein_d2's tools load such a config as the
project's own train_net.py does: by importing the project's packages first."""
import importlib
import logging
import os
import sys
from typing import Callable, List, Optional

__all__ = ["project_of", "import_project_of"]


def project_of(config_file: str) -> Optional[str]:
    """The ``projects/<Name>`` folder that holds ``config_file``, or None."""
    parts = os.path.abspath(config_file).split(os.sep)
    for i in range(len(parts) - 3, 0, -1):  # the innermost projects/<Name>/.../file
        if parts[i] == "projects":
            return os.sep.join(parts[:i + 2])
    return None


def _packages(project: str):
    """The packages of a project folder (those with an __init__.py, tests/ aside), imported."""
    if project not in sys.path:
        sys.path.insert(0, project)  # as the project's train_net.py puts it
    return [importlib.import_module(name) for name in sorted(os.listdir(project))
            if name != "tests" and os.path.isfile(os.path.join(project, name, "__init__.py"))]


def import_project_of(config_file: str) -> List[Callable]:
    """For a config under ``projects/<Name>/``: import the packages of every project beside it
    (each registers its datasets, backbones and mappers; a project may test on another's
    datasets, as ReinDet on ReinPanoptic's BDD100K instances) and return the ``add_<x>_config``
    functions of <Name>'s own packages. [] for a config outside projects/."""
    root = project_of(config_file)
    if root is None or not os.path.isdir(root):
        return []
    parent = os.path.dirname(root)
    for other in sorted(os.listdir(parent)):
        path = os.path.join(parent, other)
        if path != root and os.path.isdir(path) and not other.startswith(("_", ".")):
            try:
                _packages(path)
            except ImportError as e:  # another project's optional dependency: not this config's
                logging.getLogger("rein_d2").warning(
                    "projects/%s not imported (%s): its datasets stay unregistered", other, e)
    return [getattr(package, a) for package in _packages(root)
            for a in sorted(getattr(package, "__all__", ())) if a.startswith("add_") and a.endswith("_config")]
