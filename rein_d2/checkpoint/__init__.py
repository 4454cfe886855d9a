from .pretrained import (CheckpointMismatchError, ConversionReport, convert_official_checkpoint,
                         detect_family, load_official_checkpoint)

__all__ = ["CheckpointMismatchError", "ConversionReport", "convert_official_checkpoint",
           "detect_family", "load_official_checkpoint"]
