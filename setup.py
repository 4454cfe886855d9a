from setuptools import find_packages, setup

# rein_d2's projects are installed as top-level packages of their own (as detectron2 installs
# its projects), from their folders: `import rein_panoptic, rein_det` works from anywhere, and
# rein_d2.utils.projects imports them by these names. package -> folder holding it.
PROJECTS = {"rein_panoptic": "projects/ReinPanoptic", "rein_det": "projects/ReinDet"}


# each project's package with its subpackages (found under the package's folder, which
# package_dir names for the top-level package only)
_PROJECT_PACKAGES = [name for package, root in PROJECTS.items()
                     for name in find_packages(where=root, include=[package, package + ".*"])]

# detectron2 is deliberately not listed: its installed distribution may be named otherwise
# (sal-detectron2, or a user's own build), so pip would look for "detectron2" on PyPI and fail.
setup(
    name="rein_d2",
    version="0.1.0",
    description="Rein (CVPR 2024) for domain-generalized semantic segmentation in Detectron2",
    license="GPL-3.0",  # as the reference implementation (see LICENSE)
    packages=find_packages(include=["rein_d2", "rein_d2.*"]) + _PROJECT_PACKAGES,
    package_dir={package: f"{root}/{package}" for package, root in PROJECTS.items()},
    python_requires=">=3.10",
    # What rein_d2 itself imports, with the widest bounds known to work. numpy 2 is fine:
    # rein_d2 reads labels for detectron2's SemSegEvaluator itself (its default reader fails
    # on numpy 2). OpenCV is not listed: any distribution of it provides cv2 (opencv-python,
    # -headless, -contrib, a conda or source build), and listing one installs a second copy
    # beside a user's; `pip install -e .[opencv]` adds the headless build where none is.
    install_requires=["torch>=2.1", "torchvision", "timm>=1.0.9", "scipy", "numpy>=1.23",
                      "fvcore", "pycocotools>=2.0.2", "Pillow", "tabulate", "tqdm", "matplotlib"],
    extras_require={"opencv": ["opencv-python-headless"],
                    "export": ["onnx", "onnxruntime", "onnxscript"],  # tools/export_model.py
                    # evaluate_dg.py --corruptions; then: pip install --no-deps imagecorruptions
                    "robustness": ["scikit-image", "setuptools<81"],
                    # Deformable DETR's CUDA op for the pixel decoder (used on CUDA when it
                    # loads against the installed torch; the PyTorch path otherwise)
                    "cuda": ["ms-deform-attn"]},
)
