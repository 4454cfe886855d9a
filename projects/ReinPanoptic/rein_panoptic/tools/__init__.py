"""The program behind projects/ReinPanoptic/train_net.py (``rein_panoptic.tools.train_net``)."""
