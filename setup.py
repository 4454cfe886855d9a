from setuptools import find_packages, setup

# detectron2 is deliberately not listed: its installed distribution may be named otherwise
# (sal-detectron2, or a user's own build), so pip would look for "detectron2" on PyPI and fail.
setup(
    name="rein_d2",
    version="0.1.0",
    description="Rein (CVPR 2024) for domain-generalized semantic segmentation in Detectron2",
    packages=find_packages(include=["rein_d2", "rein_d2.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.1", "torchvision", "timm>=1.0.9", "scipy", "numpy<2",
                      "opencv-python-headless", "fvcore", "pycocotools"],
)
