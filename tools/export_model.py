#!/usr/bin/env python
"""Export a trained Rein model for inference without detectron2: ONNX and/or torch.export.
The program is rein_d2/tools/export_model.py (`python -m rein_d2.tools.export_model` runs it too);
--help for the options."""
import sys

from rein_d2.tools.export_model import main

if __name__ == "__main__":
    sys.exit(main())
