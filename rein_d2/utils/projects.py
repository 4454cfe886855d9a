"""Configs of rein_d2's own projects (``projects/<Name>/configs/...``) name the datasets,
backbones and keys that the project's package registers on import. rein_d2's tools load such
a config as the project's own train_net.py does: by importing the project's package first.

Only the known projects below are imported, by the name of their installed package (setup.py
installs them with rein_d2): nothing is imported from beside a config file, so a yaml under an
unknown ``projects/<Name>/`` folder, or a package placed next to a config, runs no code."""
import importlib
import logging
import os
from typing import Callable, List, Optional

from .cli import UserError

__all__ = ["PROJECTS", "project_of", "import_project_of"]

# projects/<Name> folder -> the package it installs (setup.py's PROJECTS)
PROJECTS = {"ReinPanoptic": "rein_panoptic", "ReinDet": "rein_det"}


def project_of(config_file: str) -> Optional[str]:
    """The known project (its folder name, a key of PROJECTS) whose ``projects/<Name>/`` folder
    holds ``config_file``, or None."""
    parts = os.path.abspath(config_file).split(os.sep)
    for i in range(len(parts) - 3, 0, -1):  # the innermost projects/<Name>/.../file
        if parts[i] == "projects":
            return parts[i + 1] if parts[i + 1] in PROJECTS else None
    return None


def import_project_of(config_file: str) -> List[Callable]:
    """For a config of a known project: import every known project's package (each registers
    its datasets, backbones and mappers; a project may test on another's datasets, as ReinDet
    on ReinPanoptic's BDD100K instances) and return the ``add_<x>_config`` functions of the
    config's own package. [] for any other config."""
    name = project_of(config_file)
    if name is None:
        return []
    for other, package in PROJECTS.items():
        if other == name:
            continue
        try:
            importlib.import_module(package)
        except ImportError as e:  # another project's optional dependency: not this config's
            logging.getLogger("rein_d2").warning(
                "projects/%s (%s) not imported (%s): its datasets stay unregistered", other, package, e)
    package = PROJECTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise UserError(f"{config_file} is a projects/{name} config, whose package {package} cannot be "
                        f"imported ({e}): install rein_d2 with its projects (pip install -e . from the "
                        f"repository) and the project's requirements (projects/{name}/README.md)") from None
    return [getattr(module, a) for a in sorted(getattr(module, "__all__", ()))
            if a.startswith("add_") and a.endswith("_config")]
