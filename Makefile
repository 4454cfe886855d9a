# One-step set-up, tests and the quick start. `make setup` is idempotent: a second run only
# checks the stamp file (delete .venv/ to start over).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Every pip call of the set-up takes the exact versions of constraints.txt.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# Real labelled street frames for the learning test (Debian's labelme-examples, not committed).
FRAMES := /usr/share/doc/labelme-examples/examples/video_annotation

.PHONY: setup test quickstart clean

setup: $(STAMP)

$(STAMP): setup.py tools/install_detectron2.sh constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23"
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	PYTHON=$(PY) bash tools/install_detectron2.sh
	$(PY) -m pip install numpy opencv-python-headless "timm>=1.0.9" scipy pytest pytest-timeout \
	  "pycocotools>=2.0.2" fvcore cityscapesscripts onnx onnxruntime onnxscript
	# COCO panoptic PQ for detectron2's COCOPanopticEvaluator (the official package is not on
	# PyPI; this is its repackaging; its plotting dependencies are not needed for evaluation).
	$(PY) -m pip install --no-deps panopticapi-lite==0.2.0
	# Cityscapes-C corruptions (tools/evaluate_dg.py --corruptions). Without its dependencies:
	# it asks for opencv-python, a second OpenCV beside the headless one; it needs scikit-image
	# and pkg_resources (setuptools before 81).
	$(PY) -m pip install scikit-image "setuptools<81"
	$(PY) -m pip install --no-deps imagecorruptions==1.1.2
	$(PY) -m pip install --no-deps -e .
	test -d $(FRAMES) || apt-get install -y labelme-examples || \
	  (apt-get update && apt-get install -y labelme-examples) || \
	  echo "warning: Debian's labelme-examples is not installed: the real-frame learning test will skip"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests projects

# The quick start: train and evaluate a small Rein model on generated street scenes (source
# style -> real-camera style) on CPU, then draw its predictions on a few validation frames.
QUICKSTART := configs/quickstart/synthstreets_dinov2_s.yaml
SYNTH := $${DETECTRON2_DATASETS:-datasets}/synthstreets
quickstart: setup
	$(PY) tools/train_net.py --config-file $(QUICKSTART)
	$(PY) tools/demo.py --config-file $(QUICKSTART) --output output/quickstart/predictions \
	  --input $(SYNTH)/source_val/images/00000.png $(SYNTH)/target_val/images/0000[0-2].png \
	  MODEL.WEIGHTS output/quickstart/model_final.pth

clean:
	rm -rf $(VENV) build *.egg-info
