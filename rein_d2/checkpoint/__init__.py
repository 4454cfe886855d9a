from .pretrained import (CheckpointMismatchError, ConversionReport, convert_official_checkpoint,
                         detect_family, load_official_checkpoint)
from .release import (ReleaseConversionReport, convert_release_checkpoint,
                      unwrap_release_checkpoint)

__all__ = ["CheckpointMismatchError", "ConversionReport", "convert_official_checkpoint",
           "detect_family", "load_official_checkpoint", "ReleaseConversionReport",
           "convert_release_checkpoint", "unwrap_release_checkpoint"]
from .io import CheckpointFileError, read_checkpoint  # noqa: E402

__all__ += ["CheckpointFileError", "read_checkpoint"]
