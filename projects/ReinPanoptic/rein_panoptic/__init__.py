"""ReinPanoptic: Rein for panoptic segmentation. Importing it registers the datasets (lazily)."""
from . import data

data.register_all()
