"""The programs behind projects/ReinPanoptic/prepare/prepare_<name>_panoptic.py: each module's
``main(argv)`` writes one dataset's COCO panoptic / instances files over the 19 Cityscapes
classes (rein_panoptic.data.preparation does the common work)."""
